"""The experiment report: one self-contained HTML page (and Markdown), and the sweep comparison.

Everything a reader needs to judge a synthetic dataset the GANDiffFace way sits on one page: each stage's
summary (from its ``stage.json``), sample grids per identity (GAN anchor and variations, diffusion
generations, curated crops), mated / non-mated score histograms against a real reference, ROC and DET
curves, per-group bars (fairness), and the benchmark table. Images are PNGs embedded as base64 ``data:``
URIs, so the HTML is one file that opens anywhere (and in a W&B artifact); the Markdown version links the
same PNGs written beside it.

``sweep_report`` compares several evaluations side by side (one per dataset of a sweep): distributions
overlaid and one metrics table, which is how GANDiffFace compares its generation settings (Fig. 5-6).
CLI: ``python -m gandiff.evaluation.report DIR [--out OUT]`` where ``DIR`` is a run folder
(``experiments/<name>``, every ``evaluate/<key>/`` in it is compared) or a Hydra multirun folder.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


# --------------------------------------------------------------------------------------------- figures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamps in the metadata: same figure, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def plot_score_histograms(series: Sequence[tuple[str, np.ndarray, np.ndarray]], reference: Any = None,
                          title: str = "Score distributions", bins: int = 100) -> bytes:
    """Densities of mated (solid) and non-mated (dashed) cosine scores per series; the reference
    (a ``ScoreHistogram``) in grey, filled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    edges = np.linspace(-1, 1, bins + 1)
    if reference is not None:
        w = np.diff(reference.edges)
        for counts, hatch in ((reference.mated, None), (reference.nonmated, "//")):
            if counts.sum():
                ax.stairs(counts / counts.sum() / w, reference.edges, fill=True, alpha=0.25, color="grey",
                          hatch=hatch)
        ax.plot([], [], color="grey", lw=6, alpha=0.4, label=f"reference: {reference.metadata.get('dataset', '')}"[:60])
    for k, (label, mated, nonmated) in enumerate(series):
        c = COLOURS[k % len(COLOURS)]
        for scores, style, kind in ((mated, "-", "mated"), (nonmated, "--", "non-mated")):
            if len(scores):
                d, _ = np.histogram(np.clip(scores, -1, 1), bins=edges, density=True)
                ax.stairs(d, edges, color=c, linestyle=style, label=f"{label} {kind}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def plot_roc_det(series: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str = "") -> bytes:
    """ROC (TMR vs FMR, log FMR) and DET (FNMR vs FMR, log-log) curves, one line per series."""
    from gandiff.evaluation.distributions import roc

    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, (label, mated, nonmated) in enumerate(series):
        if not len(mated) or not len(nonmated):
            continue
        fmr, tmr, _ = roc(mated, nonmated)
        floor = 0.5 / len(nonmated)  # a zero rate drawn at half a pair, so it stays on the log axis
        c = COLOURS[k % len(COLOURS)]
        a1.plot(np.maximum(fmr, floor), tmr, color=c, label=label)
        a2.plot(np.maximum(fmr, floor), np.maximum(1 - tmr, 0.5 / len(mated)), color=c, label=label)
    a1.set_xscale("log")
    a1.set_xlabel("FMR")
    a1.set_ylabel("TMR (1 - FNMR)")
    a1.set_title(f"ROC {title}".strip())
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("FMR")
    a2.set_ylabel("FNMR")
    a2.set_title(f"DET {title}".strip())
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    return figure_png(fig)


def plot_group_bars(values: dict[str, dict[str, float]], title: str, ylabel: str) -> bytes:
    """Grouped bars: ``values[series][group]`` (e.g. FMR and FNMR per gender)."""
    plt = _pyplot()
    groups = sorted({g for v in values.values() for g in v})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 2), 3.2))
    width = 0.8 / max(1, len(values))
    for k, (name, v) in enumerate(values.items()):
        xs = np.arange(len(groups)) + k * width
        ax.bar(xs, [v.get(g, np.nan) for g in groups], width=width, color=COLOURS[k % len(COLOURS)], label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(values) - 1) / 2, groups, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return figure_png(fig)


def image_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], cell: int = 96) -> bytes:
    """One PNG: a row per entry (label on the left), images resized to ``cell`` px squares."""
    from PIL import Image, ImageDraw

    ncols = max((len(ims) for _, ims in rows), default=0)
    label_w = 150
    canvas = Image.new("RGB", (label_w + ncols * (cell + 4), max(1, len(rows)) * (cell + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, ims) in enumerate(rows):
        y = r * (cell + 4)
        draw.text((4, y + cell // 2 - 6), label[:24], fill="black")
        for c, im in enumerate(ims):
            tile = Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB").resize((cell, cell))
            canvas.paste(tile, (label_w + c * (cell + 4), y))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- document


@dataclass
class Report:
    """Sections of HTML fragments and named PNGs; rendered to one HTML file and to Markdown + PNG files."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)  # ("h2", text) | ("p", text) | ("table", rows) | ("img", (name, png, caption))

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        if rows:
            self.blocks.append(("table", (list(columns or _columns(rows)), list(rows))))

    def image(self, name: str, png: bytes, caption: str = "") -> None:
        self.blocks.append(("img", (name, png, caption)))

    @property
    def images(self) -> list[tuple[str, bytes, str]]:
        return [b[1] for b in self.blocks if b[0] == "img"]

    def to_html(self) -> str:
        out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
               f"<title>{html.escape(self.title)}</title>", f"<style>{_CSS}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for kind, val in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(val)}</h2>")
            elif kind == "p":
                out.append(f"<p>{html.escape(val)}</p>")
            elif kind == "table":
                cols, rows = val
                out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
                for r in rows:
                    out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>")
                out.append("</table>")
            elif kind == "img":
                name, png, caption = val
                data = base64.b64encode(png).decode("ascii")
                out.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def to_markdown(self, asset_dir: str = "assets") -> str:
        out = [f"# {self.title}", ""]
        for kind, val in self.blocks:
            if kind == "h2":
                out += [f"## {val}", ""]
            elif kind == "p":
                out += [val, ""]
            elif kind == "table":
                cols, rows = val
                out.append("| " + " | ".join(cols) + " |")
                out.append("|" + "---|" * len(cols))
                out += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in rows]
                out.append("")
            elif kind == "img":
                name, _, caption = val
                out += [f"![{caption or name}]({asset_dir}/{name}.png)", ""]
        return "\n".join(out)

    def write(self, folder: str | os.PathLike, stem: str = "report") -> dict[str, Path]:
        """``<stem>.html`` (self-contained), ``<stem>.md`` and ``assets/<name>.png``, atomically."""
        from gandiff.artifacts import atomic_write_bytes, atomic_write_text

        folder = Path(folder)
        files = {"html": atomic_write_text(folder / f"{stem}.html", self.to_html()),
                 "md": atomic_write_text(folder / f"{stem}.md", self.to_markdown())}
        for name, png, _ in self.images:
            files[name] = atomic_write_bytes(folder / "assets" / f"{name}.png", png)
        return files


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
        "th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:12px;color:#555}"
        "h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}")


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) if isinstance(v, dict) else ", ".join(map(_fmt, v))
    return str(v)


# --------------------------------------------------------------------------------------------- content


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


def _load_scores(evaluate_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    p = evaluate_dir / "scores" / f"{key}.npz"
    if not p.is_file():
        return None
    with np.load(p) as z:
        if "mated" in z:
            return z["mated"], z["nonmated"]
        s, y = z["scores"], z["issame"] if "issame" in z else z["labels"].astype(bool)
        return s[y], s[~y]


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

    rep.heading("Score distributions")
    reference = ScoreHistogram.load(reference_path) if reference_path else None
    dist_rows = []
    for which in ("face", "recognizer"):
        series = []
        made = "diffusion" if diffusion else "GAN only"
        for kind, label in (("export", f"{made} (export)"), ("generate", f"{made} (all generated faces)"),
                            ("gan", "GAN variations")):
            key = f"{kind}-{which}"
            r = items.get(key)
            if not r:
                continue
            row = {"item": key, "status": r.get("status"), "embedder": r.get("embedder"),
                   "images": r.get("num_images"), "mated": r.get("mated_pairs"), "non-mated": r.get("nonmated_pairs"),
                   "sampled": bool(r.get("mated_sampled") or r.get("nonmated_sampled"))}
            s = r.get("summary") or {}
            row.update({k: s.get(k) for k in ("eer", "d_prime", "fnmr@fmr=0.01", "fnmr@fmr=0.001", "mated_mean",
                                              "nonmated_mean")})
            row["accuracy"] = (r.get("verification") or {}).get("accuracy")
            dist_rows.append(row)
            sc = _load_scores(evaluate_dir, key) if r.get("status") == "ok" else None
            if sc is not None:
                series.append((label, *sc))
        if series:
            ref = reference if reference is not None else None
            rep.image(f"histograms_{which}", plot_score_histograms(series, ref, title=f"embedder: {which}"),
                      f"Mated (solid) and non-mated (dashed) scores, {which} embedder")
            rep.image(f"roc_det_{which}", plot_roc_det(series, title=which), f"ROC and DET, {which} embedder")
    rep.table(dist_rows)
    comps = [{"comparison": k, "kind": kind, **(v.get(kind) or {})} for k, v in metrics.get("comparisons", {}).items()
             for kind in ("mated", "nonmated")]
    if comps and diffusion:
        rep.text("Diffusion variations (diffusion_vs_gan: the exported selection; generated_vs_gan: every "
                 "generated image with a face, before selection) against GAN-only variations of the same identities "
                 "(GANDiffFace's claim: diffusion adds intra-class variation, i.e. lower and wider mated scores).")
        rep.table(comps)
    ref_rows = [{"item": k, "kind": kind, **((r.get("reference") or {}).get("distances", {}).get(kind) or {})}
                for k, r in items.items() if r.get("reference") for kind in ("mated", "nonmated")]
    if ref_rows:
        rep.text(f"Distances to the reference distribution {reference_path}.")
        rep.table(ref_rows)

    from gandiff.evaluation import fairness as F

    fair_rows = F.summary_rows(items)
    fair_images = []
    for key, attr, d, rfw in F.fairness_items(items):
        groups = d.get("groups") or {}
        # bars only for numbers: a "not measurable" rate is in the table, not drawn as 0
        rep_vals = {name: {g: v[k] for g, v in groups.items() if F.is_measurable(v[k]) and v[k] is not None}
                    for name, k in (("FMR", "fmr"), ("FNMR", "fnmr"))}
        if rfw.get("groups"):
            rep_vals["1 - accuracy"] = {g: 1 - a for g, a in rfw["groups"].items()}
        rep_vals = {k: v for k, v in rep_vals.items() if v}
        if rep_vals:
            fair_images.append(("img", (f"fairness_{key}_{attr}", plot_group_bars(
                rep_vals, f"{key}: {attr} (threshold at global FMR {d.get('global_fmr')})", "rate"),
                f"Per-group error rates, {key}, {attr}")))
    if fair_rows:
        rep.heading("Fairness")
        first = next(d for _, _, d, _ in F.fairness_items(items))
        rep.text(F.conventions(first.get("threshold_rule", "max_tmr"), first.get("confidence", F.CONFIDENCE),
                               first.get("global_fmr", 1e-3)))
        rep.table(fair_rows)
        rep.table(F.group_rows(items))
    rep.blocks.extend(fair_images)

    bench_rows = []
    for key, r in items.items():
        if "benchmark" in r or key.startswith(("heldout", "bin-", "lfw", "ijb")):
            b = r.get("benchmark") or {}
            bench_rows.append({"benchmark": key, "status": r.get("status"), "pairs": b.get("num_pairs", b.get("pairs")),
                               "accuracy": b.get("accuracy_mean"), "std": b.get("accuracy_std"),
                               "VAL@FAR": b.get("val_mean"),
                               **{k: v for k, v in b.items() if k.startswith("tar@far")},
                               "note": r.get("reason")})
    rep.heading("Benchmarks (trained recognizer)")
    if bench_rows:
        rep.table(bench_rows)
    else:
        rep.text("No benchmark was configured or the recognizer is missing.")
    from gandiff.evaluation.field_table import add_field_sections, run_measures

    made = "diffusion" if diffusion else "GAN only"
    add_field_sections(rep, [(f"this run ({made})", items)], run_measures(items, made))
    return rep


# --------------------------------------------------------------------------------------------- sweeps


def _generation_source(run_dir: Path, evaluate_inputs: dict[str, Any]) -> str | None:
    """``generation.source`` of the chain an evaluation came from (evaluate -> curate -> generate)."""
    from gandiff.artifacts import read_json

    curate = run_dir / "curate" / str(evaluate_inputs.get("curate", {}).get("key")) / "stage.json"
    if not curate.is_file():
        return None
    gen_key = read_json(curate).get("inputs", {}).get("generate", {}).get("key")
    generate = run_dir / "generate" / str(gen_key) / "stage.json"
    if not generate.is_file():
        return None
    # A GAN-only chain's generate stage read the identities, not DreamBooth adapters (its config hashes
    # no generation keys at all).
    return "gan" if "identities" in read_json(generate).get("inputs", {}) else "diffusion"


def _chain_config(evaluate_dir: Path) -> dict[str, Any]:
    """Every stage config an evaluation was built from (its stage.json inputs, followed upstream), flattened."""
    from gandiff.pipeline import _flatten, upstream_records

    out: dict[str, Any] = {}
    for rec in upstream_records([evaluate_dir]):
        out.update(_flatten({k: v for k, v in rec.get("config", {}).items() if k != "seed"}))
    return out


def _distinct_labels(found: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Evaluations whose labels collide (same curation tag, e.g. two prompt banks) get the settings that
    tell them apart appended (at most two, shortened)."""
    groups: dict[str, list[int]] = {}
    for i, (label, _) in enumerate(found):
        groups.setdefault(label, []).append(i)
    out = list(found)
    for label, idx in groups.items():
        if len(idx) < 2:
            continue
        configs = [_chain_config(found[i][1]) for i in idx]
        keys = sorted({k for c in configs for k in c if k})
        differ = [k for k in keys if len({repr(c.get(k, "<unset>")) for c in configs}) > 1]
        for i, c in zip(idx, configs):
            parts = [f"{k}={str(c.get(k, '<unset>'))[:24]}" for k in differ[:2]] or [found[i][1].name]
            out[i] = (f"{label} [{', '.join(parts)}]", found[i][1])
    return out


def find_evaluations(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """(label, evaluate folder) pairs under ``path``: a run folder (every ``evaluate/<key>/`` with a
    ``metrics.json``, labelled by the export's ``tag.txt``) or a Hydra multirun folder (each job's
    ``.hydra/config.yaml`` recomposed to find its evaluate folder, labelled by its overrides)."""
    from gandiff.artifacts import read_json

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected a run folder or a Hydra multirun folder)")
    found: list[tuple[str, Path]] = []
    if (root / "evaluate").is_dir():
        for d in sorted((root / "evaluate").iterdir()):
            if not (d / "metrics.json").is_file():
                continue
            label = d.name
            if (d / "stage.json").is_file():
                inputs = read_json(d / "stage.json").get("inputs", {})
                exp_key = inputs.get("export", {}).get("key")
                tag = root / "export" / str(exp_key) / "tag.txt"
                if exp_key and tag.is_file():
                    label = tag.read_text().strip() or label
                if _generation_source(root, inputs) == "gan":
                    label = f"GAN only: {label}"  # experiment=gan_only shares the run folder
            found.append((label, d))
        return _distinct_labels(found)
    jobs = sorted((p for p in root.iterdir() if (p / ".hydra" / "config.yaml").is_file()),
                  key=lambda p: int(p.name) if p.name.isdigit() else p.name)
    if not jobs:
        raise FileNotFoundError(f"{root}: no evaluate/ folder and no Hydra jobs (<n>/.hydra/config.yaml)")
    from omegaconf import OmegaConf

    from gandiff.config import register
    from gandiff.pipeline import stage_dir

    register()
    for job in jobs:
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        over = job / ".hydra" / "overrides.yaml"
        label = " ".join(str(o) for o in OmegaConf.load(over) if not str(o).startswith("stage=")) if over.is_file() \
            else job.name
        d = stage_dir(cfg, "evaluate")
        if (d / "metrics.json").is_file():
            found.append((label or job.name, d))
        else:
            log.warning("job %s: no evaluate results in %s (has `gandiff evaluate` run for it?)", job.name, d)
    return found


def sweep_report(path: str | os.PathLike, out: str | os.PathLike | None = None) -> dict[str, Path]:
    """Compare the datasets of a sweep side by side: overlaid distributions and one metrics table."""
    from gandiff.artifacts import read_json

    evals = find_evaluations(path)
    if not evals:
        raise FileNotFoundError(f"{path}: no finished evaluations found")
    rep = Report(f"Sweep comparison: {Path(path).name}")
    rep.text(f"{len(evals)} evaluations under {path}.")
    rows = []
    for which in ("face", "recognizer"):
        series = []
        for label, d in evals:
            items = read_json(d / "metrics.json").get("items", {})
            r = items.get(f"export-{which}")
            if not r:
                continue
            s = r.get("summary") or {}
            rows.append({"setting": label, "embedder": which, "status": r.get("status"), "images": r.get("num_images"),
                         "identities": r.get("num_identities"), "eer": s.get("eer"), "d_prime": s.get("d_prime"),
                         "fnmr@fmr=0.001": s.get("fnmr@fmr=0.001"), "mated_mean": s.get("mated_mean"),
                         "nonmated_mean": s.get("nonmated_mean"),
                         "heldout acc": (items.get("heldout-recognizer", {}).get("benchmark") or {}).get("accuracy_mean")})
            sc = _load_scores(d, f"export-{which}") if r.get("status") == "ok" else None
            if sc is not None:
                series.append((label[:30], *sc))
        if series:
            rep.heading(f"Distributions ({which} embedder)")
            rep.image(f"sweep_histograms_{which}", plot_score_histograms(series, title=f"sweep, {which}"),
                      "Exported datasets of the sweep, overlaid")
            rep.image(f"sweep_roc_det_{which}", plot_roc_det(series, title=which), "ROC and DET per setting")
    rep.heading("Metrics")
    rep.table(rows)
    from gandiff.evaluation.field_table import add_field_sections, run_measures

    runs = [(label, read_json(d / "metrics.json").get("items", {})) for label, d in evals]
    add_field_sections(rep, runs, [m for label, items in runs for m in run_measures(items, "dataset", f"{label}: ")])
    out_dir = Path(out) if out is not None else Path(path) / "sweep_report"
    return rep.write(out_dir, "sweep")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="gandiff report-sweep",
        description="Compare the datasets of a sweep: overlaid score distributions and one metrics table.",
        epilog="examples:\n  gandiff report-sweep experiments/demo\n  gandiff report-sweep experiments/multirun/2026-01-01_12-00-00",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a run folder (experiments/<name>) or a Hydra multirun folder")
    p.add_argument("--out", default=None, help="output folder (default: <path>/sweep_report)")
    args = p.parse_args(argv)
    from gandiff.log import setup_logging

    setup_logging()
    files = sweep_report(args.path, args.out)
    print(files["html"])


def html_images_ok(text: str) -> tuple[int, list[str]]:
    """(number of <img> tags, problems): every image must be an embedded PNG that decodes."""
    from PIL import Image

    problems = []
    srcs = re.findall(r"<img[^>]*\ssrc='([^']*)'", text)
    for i, src in enumerate(srcs):
        if not src.startswith("data:image/png;base64,"):
            problems.append(f"image {i}: not an embedded PNG ({src[:40]})")
            continue
        try:
            with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as im:
                im.load()
                if im.width < 2 or im.height < 2:
                    problems.append(f"image {i}: {im.width}x{im.height}")
        except Exception as e:
            problems.append(f"image {i}: does not decode ({e})")
    return len(srcs), problems


if __name__ == "__main__":
    main()


def browser_check(html_path: str | os.PathLike, chromium: str = "chromium", timeout: float = 60.0) -> tuple[int, int]:
    """Open the report in headless Chromium; return (images that loaded with a size, images on the page).

    A copy of the page gets a script that, after ``load``, writes the count of ``<img>`` with
    ``naturalWidth > 0`` into the DOM, which ``--dump-dom`` prints.
    """
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which(chromium)
    if exe is None:
        raise FileNotFoundError(f"{chromium}: not installed (apt-get install -y chromium)")
    text = Path(html_path).read_text(encoding="utf-8")
    probe = ("<script>window.addEventListener('load',function(){var im=document.images,n=0;"
             "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)n++;}"
             "var d=document.createElement('div');d.id='gandiff-check';d.textContent=n+'/'+im.length;"
             "document.body.appendChild(d);});</script>")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    m = re.search(r"id=\"gandiff-check\">(\d+)/(\d+)<", res.stdout)
    if not m:
        raise RuntimeError(f"chromium did not render the page (exit {res.returncode}): {res.stderr[-500:]}")
    return int(m.group(1)), int(m.group(2))
