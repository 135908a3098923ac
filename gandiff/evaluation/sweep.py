"""``gandiff report-sweep``: the datasets of a sweep side by side (overlaid distributions, one metrics table),
which is how GANDiffFace compares its generation settings (Fig. 5-6).

CLI: ``gandiff report-sweep DIR [--out OUT]`` (or ``python -m gandiff.evaluation.sweep``) where ``DIR`` is a
run folder (``experiments/<name>``, every ``evaluate/<key>/`` in it is compared) or a Hydra multirun folder.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gandiff.evaluation.document import Report
from gandiff.evaluation.plots import load_scores, plot_roc_det, plot_score_histograms

log = logging.getLogger(__name__)



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
            sc = load_scores(d, f"export-{which}") if r.get("status") == "ok" else None
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



if __name__ == "__main__":
    main()
