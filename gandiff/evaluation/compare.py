"""``gandiff compare``: finished runs and datasets a user already has, in one table, measured by the same code.

Each argument is a run folder, a Hydra multirun folder, or any dataset ``open_dataset`` opens (a ``.rec``, an
image folder, WebDataset shards, a gandiff export). A run brings its evaluate results; a dataset is embedded
here (``--embedder``, SFace by default) and measured with ``gandiff.evaluation.measures``; with no recognizer
its benchmark columns read "–". Output: ``<out>/compare.html`` and ``compare.md`` (field table, variation /
separability table, overlaid distributions).

Design: docs/design.md#gandiff-compare.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def embedder_name(embedder: Any) -> str:
    """The evaluate stage's name for a face embedder: ``<class>:<model file>``."""
    model = getattr(embedder, "model", None)
    path = getattr(model, "path", None) or getattr(embedder, "model_path", "")
    return f"{type(embedder).__name__}:{Path(str(path)).name}"


def measure_dataset(path: str | Path, embedder: Any, max_images: int | None = None, max_pairs: int = 2_000_000,
                    seed: int = 0, batch_size: int = 64) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """An evaluate-like item for a dataset on disk: ``(item row, (mated, non-mated scores))``."""
    from gandiff.datasets.readers import open_dataset
    from gandiff.evaluation.distributions import ScoreHistogram, embed_dataset, pair_scores
    from gandiff.evaluation.measures import dataset_measures

    ds = open_dataset(path)
    emb, labels, idx = embed_dataset(ds, embedder.embed, batch_size=batch_size, max_images=max_images, seed=seed)
    meta = [ds.metadata(int(i)) for i in idx]
    ps = pair_scores(emb, labels, max_pairs=max_pairs, seed=seed)
    stats = ScoreHistogram.from_scores(ps.mated, ps.nonmated).stats
    row = {"key": "export-face", "status": "ok", "dataset": str(ds.path), "format": ds.format,
           "embedder": embedder_name(embedder), "summary": stats, **ps.describe(),
           "measures": dataset_measures(emb, labels, meta), "leakage": None}
    return row, (ps.mated, ps.nonmated)


def _label_for(path: Path) -> str:
    p = path.parent if path.name in ("train.rec",) else path
    return p.name or str(p)


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "evaluate").is_dir() or any((q / ".hydra" / "config.yaml").is_file()
                                                                 for q in path.iterdir() if q.is_dir()))


def compare(paths: Sequence[str | Path], out: str | Path, embedder: Any = None, max_images: int | None = None,
            max_pairs: int = 2_000_000, seed: int = 0, published: str | Path | None = None) -> dict[str, Path]:
    """Build and write the comparison report; returns the written files (``html``, ``md``, plots)."""
    from gandiff.artifacts import read_json
    from gandiff.evaluation.field_table import add_field_sections, load_published, run_measures
    from gandiff.evaluation.document import Report
    from gandiff.evaluation.plots import load_scores, plot_roc_det, plot_score_histograms

    if not paths:
        raise ValueError("gandiff compare: give at least one run folder or dataset")
    runs: list[tuple[str, dict[str, dict[str, Any]]]] = []
    series: list[tuple[str, np.ndarray, np.ndarray]] = []
    names: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run folder or dataset")
        if _is_run(p):
            from gandiff.evaluation.sweep import find_evaluations

            for label, d in find_evaluations(p):
                items = read_json(d / "metrics.json").get("items", {})
                runs.append((f"{p.name}: {label}", items))
                names.add(str((items.get("export-face") or {}).get("embedder", "")))
                sc = load_scores(d, "export-face") if (items.get("export-face") or {}).get("status") == "ok" else None
                if sc is not None:
                    series.append((f"{p.name}: {label}"[:30], *sc))
            continue
        if embedder is None:
            from gandiff.evaluation.distributions import make_embedder

            embedder = make_embedder("sface")
        log.info("embedding %s with %s", p, embedder_name(embedder))
        row, (mated, nonmated) = measure_dataset(p, embedder, max_images=max_images, max_pairs=max_pairs, seed=seed)
        names.add(row["embedder"])
        runs.append((_label_for(p), {"export-face": row}))
        series.append((_label_for(p)[:30], mated, nonmated))
    names.discard("")
    rep = Report("gandiff compare")
    rep.text(f"{len(runs)} datasets: " + "; ".join(label for label, _ in runs) + ".")
    if len(names) > 1:
        rep.text(f"WARNING: the datasets were embedded with different models ({', '.join(sorted(names))}): their "
                 "measures are not comparable. Pass --embedder to match the runs' face embedder.")
    measures = [m for label, items in runs for m in run_measures(items, "dataset", f"{label}: ")]
    add_field_sections(rep, runs, measures, load_published(published))
    if series:
        rep.heading("Score distributions (face embedder)")
        rep.image("compare_histograms", plot_score_histograms(series, title="compared datasets"),
                  "Mated (solid) and non-mated (dashed) cosine scores")
        rep.image("compare_roc_det", plot_roc_det(series, title="compared datasets"), "ROC and DET")
    return rep.write(Path(out), "compare")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="gandiff compare",
        description="One table for finished gandiff runs and datasets you already have (a .rec, an image folder, "
                    "WebDataset shards): benchmark accuracies beside the published numbers, and the variation / "
                    "separability measures computed with the same code.",
        epilog="examples:\n"
               "  gandiff compare experiments/demo\n"
               "  gandiff compare experiments/gandiff_sd15 /data/faces_webface_112x112 /data/dcface_0.5m --max-images 50000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="run folders (experiments/<name>, multirun folders) or datasets")
    p.add_argument("--out", default="compare_report", help="output folder (default: ./compare_report)")
    p.add_argument("--embedder", default="sface",
                   help="for datasets: 'sface' (the offline SFace ONNX, the demo's face embedder) or an insightface "
                        "ONNX recognizer (.onnx); runs keep the embedder their evaluate stage used")
    p.add_argument("--max-images", type=int, default=None, help="embed a seeded random subset of each dataset")
    p.add_argument("--max-pairs", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--published", default=None, help="published-numbers CSV (default: the shipped one)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from gandiff.errors import UserError
    from gandiff.evaluation.distributions import make_embedder
    from gandiff.log import setup_logging

    setup_logging()
    try:
        needs_embedder = any(not _is_run(Path(x)) for x in args.paths if Path(x).exists())
        emb = make_embedder(args.embedder, device=args.device) if needs_embedder else None
        files = compare(args.paths, args.out, emb, max_images=args.max_images, max_pairs=args.max_pairs,
                        seed=args.seed, published=args.published)
    except (UserError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    print(files["html"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
