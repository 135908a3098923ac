"""The ``evaluate`` stage: benchmark accuracy of the trained recognizer and score distributions of the data.

Each registered evaluator (``gandiff.evaluation.registry``; the built-ins in ``gandiff.evaluation.evaluators``)
makes items from the ``benchmark`` config, each measured on its own so a killed run resumes and a shard can take
some. Upstream: ``identities`` (GAN images and attributes), ``curate`` (every generated image's embeddings),
``export`` (the dataset) and ``train`` (the recognizer). An empty export is an outcome, not an error: its items
say ``status: "empty"`` and why, and everything that does not need the dataset is still measured.

Outputs: ``metrics.json`` (everything, nested), ``metrics.parquet`` (one flat row per item),
``scores/<item>.npz`` (mated / non-mated scores, or pair scores of a benchmark), ``histograms/<item>.json``
(compact ``ScoreHistogram`` files, usable later as a reference).
"""

from __future__ import annotations

import logging
from typing import Any

from gandiff.artifacts import atomic_write_json, write_table
from gandiff.evaluation.context import EvalContext, RecognizerMissing
from gandiff.pipeline import Stage, StageContext, StageError

log = logging.getLogger(__name__)

FLAT_NUMBERS = ("eer", "d_prime", "fnmr@fmr=0.01", "fnmr@fmr=0.001", "fnmr@fmr=0.0001", "mated_mean", "mated_std",
                "nonmated_mean", "nonmated_std")


def missing_packages(row: Any) -> list[str]:
    """Every ``missing_packages`` list anywhere in an item row: the optional packages a part of it was skipped for."""
    if isinstance(row, dict):
        return [m for k, v in row.items() for m in (v if k == "missing_packages" else missing_packages(v))]
    if isinstance(row, list):
        return [m for v in row for m in missing_packages(v)]
    return []


class EvaluateStage(Stage):
    name = "evaluate"
    upstream = ("identities", "curate", "export", "train")
    example = "gandiff evaluate benchmark=verification_bins benchmark.root=/data/faces_webface_112x112"
    config_keys = ("benchmark", "face")
    # 1: prompt effects measure hats by a uniform crown and masks by their distance from skin; the independent
    # measures stream their embeddings (2026-12-04).
    revision = 1
    ignore_keys = ("benchmark.batch_size", "face.batch_size", "face.match_threshold")

    def items(self, ctx: StageContext) -> list[str]:
        from gandiff.evaluation.registry import item_keys

        return item_keys(ctx.settings.benchmark)

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        from gandiff.evaluation.registry import evaluator_for

        ev = EvalContext(ctx)
        for key in keys:
            evaluator = evaluator_for(key)
            if evaluator is None:
                raise StageError(f"evaluate: no registered evaluator makes item {key!r} "
                                 "(gandiff.evaluation.registry.register)")
            try:
                row, files = evaluator.measure(ev, key)
            except RecognizerMissing as e:
                log.warning("%s: skipped: %s", key, e)
                row, files = {"key": key, "status": "skipped", "reason": str(e)}, []
            # Inputs named by stage and key, not by where this run is: the same results give the same bytes.
            # A part skipped for a missing optional package (dlib) is redone once that package is installed.
            ctx.items.put(key, ctx.portable(row), files, retry_when_installed=missing_packages(row))

    # ----------------------------------------------------------------------------------------- merge

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        from gandiff.evaluation.registry import evaluators

        rows = {r["key"]: r for r in ctx.items.rows(keys)}
        comparisons: dict[str, Any] = {}
        for evaluator in evaluators():
            if evaluator.combine is not None:
                comparisons.update(evaluator.combine(ctx.dir, rows))
        export_rows = [r for k, r in rows.items() if k.startswith("export-")]
        empty = next((r for r in export_rows if r.get("status") == "empty"), None)
        metrics = {
            "export_status": "empty" if empty else "ok",
            "export_reason": empty.get("reason") if empty else None,
            "items": rows,
            "comparisons": comparisons,
        }
        atomic_write_json(ctx.dir / "metrics.json", metrics)
        write_table(ctx.dir / "metrics.parquet", [self._flat(r) for r in rows.values()], schema=_flat_schema())
        counts: dict[str, Any] = {"items": len(keys), "export_empty": bool(empty),
                                  "skipped": sum(r.get("status") != "ok" for r in rows.values())}
        for k, r in rows.items():
            if r.get("status") != "ok":
                continue
            if "summary" in r:
                counts[f"{k}/eer"] = r["summary"].get("eer")
                counts[f"{k}/d_prime"] = r["summary"].get("d_prime")
            if "benchmark" in r:
                acc = r["benchmark"].get("accuracy_mean")
                counts[f"{k}/accuracy"] = acc
        if empty:
            log.warning("evaluate: the exported dataset is empty (%s); its distributions are not measured",
                        empty.get("reason"))
        if ctx.tracker is not None:
            ctx.tracker.log_table("evaluate/metrics", [self._flat(r) for r in rows.values()])
            from gandiff.evaluation.fairness import tracker_rows

            # numbers, or "not measurable: ..." in `shown` (value None) where the data cannot resolve them
            ctx.tracker.log_table("evaluate/fairness", tracker_rows(rows))
        return counts

    @staticmethod
    def _flat(r: dict[str, Any]) -> dict[str, Any]:
        s = r.get("summary") or {}
        bm = r.get("benchmark") or {}
        v = r.get("verification") or {}
        out: dict[str, Any] = {
            "key": r["key"], "status": r.get("status"), "dataset": str(r.get("dataset", "")),
            "embedder": str(r.get("embedder", "")), "reason": str(r.get("reason", "") or ""),
            "images": r.get("num_images"), "identities": r.get("num_identities"),
            "mated_pairs": r.get("mated_pairs"), "nonmated_pairs": r.get("nonmated_pairs"),
            "accuracy": bm.get("accuracy_mean", v.get("accuracy")), "accuracy_std": bm.get("accuracy_std",
                                                                                          v.get("accuracy_std")),
            "val": bm.get("val_mean"),
        }
        out.update({k: s.get(k) for k in FLAT_NUMBERS})
        return out


def _flat_schema() -> Any:
    import pyarrow as pa

    fields = [("key", pa.string()), ("status", pa.string()), ("dataset", pa.string()), ("embedder", pa.string()),
              ("reason", pa.string()), ("images", pa.int64()), ("identities", pa.int64()),
              ("mated_pairs", pa.int64()), ("nonmated_pairs", pa.int64()), ("accuracy", pa.float64()),
              ("accuracy_std", pa.float64()), ("val", pa.float64())]
    fields += [(k, pa.float64()) for k in FLAT_NUMBERS]
    return pa.schema(fields)
