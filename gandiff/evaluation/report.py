"""The experiment report: each stage's summary, GANDiffFace's claims in sentences, sample grids per identity,
then one section per registered report section (``gandiff.evaluation.registry``: distributions, fairness,
benchmarks, the field's table), as one self-contained HTML page and Markdown (``gandiff.evaluation.document``).

Figures are in ``gandiff.evaluation.plots``, the sweep comparison (``gandiff report-sweep``) in
``gandiff.evaluation.sweep``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gandiff.evaluation.document import Report, browser_check, html_images_ok  # noqa: F401 (scripts/ import them here)
from gandiff.evaluation.plots import image_grid
from gandiff.evaluation.sweep import main  # noqa: F401 (`gandiff report-sweep` = gandiff.evaluation.report:main)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")



def _images(folder: Path, limit: int) -> list[np.ndarray]:
    from gandiff.face.images import read_image

    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [read_image(p) for p in paths[:limit]]


def sample_grid_rows(identities_dir: Path | None, generate_dir: Path | None, curate_dir: Path | None,
                     num_identities: int = 4, per_row: int = 6) -> list[tuple[str, list[np.ndarray]]]:
    """Rows of the per-identity sample grid: GAN anchor + variations, generations, curated crops."""
    rows: list[tuple[str, list[np.ndarray]]] = []
    if identities_dir is None or not (identities_dir / "images").is_dir():
        return rows
    ids = sorted(p.name for p in (identities_dir / "images").iterdir() if p.is_dir())[:num_identities]
    for ident in ids:
        rows.append((f"{ident} GAN", _images(identities_dir / "images" / ident, per_row)))
        if generate_dir is not None:
            gen = next((d for d in (generate_dir / "images" / ident, generate_dir / ident) if d.is_dir()), None)
            if gen is not None:
                rows.append((f"{ident} diffusion", _images(gen, per_row)))
        if curate_dir is not None and (curate_dir / "crops" / ident).is_dir():
            rows.append((f"{ident} curated", _images(curate_dir / "crops" / ident, per_row)))
    return [r for r in rows if r[1]]



def _stage_rows(stage_records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, rec in stage_records.items():
        counts = {k: v for k, v in (rec.get("counts") or {}).items() if isinstance(v, (int, float, str, bool))}
        rows.append({"stage": name, "key": rec.get("key"), "seconds": (rec.get("timings") or {}).get("seconds"),
                     "summary": counts})
    return rows


def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def claims_summary(items: dict[str, dict[str, Any]], export_record: dict[str, Any] | None = None,
                   diffusion: bool = True) -> list[str]:
    """GANDiffFace's claims in plain sentences, from the face embedder's distributions (evaluate items).

    (a) GAN variations alone, (b) every generated face and the exported selection: mated vs non-mated,
    EER and d'; then how much intra-class variation diffusion added (the drop of the mated mean against
    the GAN variations) while every exported image stayed above curation's anchor-similarity threshold.
    Says what came out, favourable or not.
    """
    def line(key: str, label: str) -> tuple[str, dict[str, Any]] | None:
        r = items.get(key) or {}
        s = r.get("summary") or {}
        if r.get("status") != "ok" or s.get("mated_mean") is None:
            return None
        return (f"{label} ({key}, {r.get('num_images')} images of {r.get('num_identities')} identities): mated "
                f"{_num(s.get('mated_mean'))} ± {_num(s.get('mated_std'))} vs non-mated "
                f"{_num(s.get('nonmated_mean'))} ± {_num(s.get('nonmated_std'))}, EER {_num(s.get('eer'))}, "
                f"d′ {_num(s.get('d_prime'), 2)}.", s)

    out, found = [], {}
    made = "Diffusion" if diffusion else "GAN-only run (generation.source=gan)"
    for key, label in (("gan-face", "GAN variations alone"), ("generate-face", f"{made}, every generated face"),
                       ("export-face", f"{made}, the exported selection")):
        got = line(key, label)
        if got:
            out.append(got[0])
            found[key] = got[1]
    gan = found.get("gan-face")
    cur = ((export_record or {}).get("config") or {}).get("curation") or {}
    counts = (export_record or {}).get("counts") or {}
    threshold = cur.get("min_anchor_similarity")
    for key, what in (("export-face", "the exported diffusion images"), ("generate-face", "all generated faces")):
        d = found.get(key)
        if gan is None or d is None or not diffusion:
            continue
        drop = gan["mated_mean"] - d["mated_mean"]
        compare = (f"mated mean {_num(d['mated_mean'])} (spread {_num(d.get('mated_std'))}) against "
                   f"{_num(gan['mated_mean'])} ({_num(gan.get('mated_std'))}) for the GAN variations")
        if d.get("eer") is None:
            sentence = f"{what[0].upper()}{what[1:]} have a {compare} (too few identities for an EER)"
        elif d["eer"] >= 0.25:
            sentence = (f"Identity: {what} have a {compare}, and their mated and non-mated scores overlap "
                        f"(EER {_num(d.get('eer'))}): diffusion lost identity rather than adding variation")
        else:
            sentence = (f"Intra-class variation: {what} have a {compare}: diffusion "
                        + (f"added variation (the mated mean is {drop:.3f} lower)" if drop > 0 else
                           "added no variation (the mated mean is not lower)"))
            if key == "export-face" and threshold is not None:
                sentence += (f", while each of the {counts.get('images')} exported images stayed at least {threshold} "
                             "cosine similar to its identity's anchor (curation.min_anchor_similarity)")
        out.append(sentence + ".")
        break
    if not diffusion and gan is not None:
        out.append("This run made no diffusion images: compare its export and recognizer with a diffusion run's "
                   "on the same identities (`gandiff report-sweep <run folder>`: the two chains share it).")
    if "export-face" not in found and counts.get("empty"):
        out.append("No generated image passed curation: the exported dataset is empty.")
    return out


def build_report(title: str, stage_records: dict[str, dict[str, Any]], evaluate_dir: Path,
                 identities_dir: Path | None = None, generate_dir: Path | None = None,
                 curate_dir: Path | None = None, reference_path: str | None = None, diffusion: bool = True) -> Report:
    """The experiment report from the stages' folders (what ``ReportStage`` calls)."""
    from gandiff.artifacts import read_json
    from gandiff.evaluation.distributions import ScoreHistogram
    from gandiff.evaluation.registry import ReportView, sections

    metrics = read_json(evaluate_dir / "metrics.json")
    items: dict[str, dict[str, Any]] = metrics.get("items", {})
    rep = Report(title)
    rep.heading("Stages")
    rep.table(_stage_rows(stage_records), ["stage", "key", "seconds", "summary"])
    if metrics.get("export_status") == "empty":
        rep.text(f"The exported dataset is EMPTY: {metrics.get('export_reason')}. Its score distributions, "
                 "fairness and the recognizer trained on it are not measured; the GAN identities and every "
                 "generated image with a face (generate-face, before selection) still are.")

    claims = claims_summary(items, stage_records.get("export"), diffusion)
    if claims:
        rep.heading("GANDiffFace's claims, measured here (face embedder)")
        for sentence in claims:
            rep.text(sentence)

    grid = sample_grid_rows(identities_dir, generate_dir, curate_dir)
    if grid:
        rep.heading("Samples per identity")
        made = "diffusion generations" if diffusion else "the same GAN images as the dataset's (generation.source=gan)"
        rep.image("samples", image_grid(grid), f"GAN anchor and variations, {made}, curated crops")

    reference = ScoreHistogram.load(reference_path) if reference_path else None
    view = ReportView(metrics, evaluate_dir, reference, reference_path, diffusion)
    for section in sections():
        section.render(rep, view)
    return rep
