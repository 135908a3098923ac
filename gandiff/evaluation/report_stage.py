"""The ``report`` stage: one HTML page and one Markdown file summarising every stage of the run.

Upstream: every stage before it (their ``stage.json`` are summarised; identities, generate and curate
give the sample grids; evaluate gives the metrics, scores and fairness). No config group decides the
report's content beyond the reference histogram of ``benchmark`` (drawn under the histograms).

Outputs: ``report.html`` (self-contained: PNGs embedded), ``report.md`` + ``assets/*.png``. With a tracker
(W&B), the plots go out as images, the metrics as a table, and the exported dataset as an artifact
reference (a pointer to the folder, not an upload).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gandiff.artifacts import read_json
from gandiff.pipeline import Stage, StageContext
from gandiff.stages import stages_before

log = logging.getLogger(__name__)


class ReportStage(Stage):
    name = "report"
    upstream = stages_before(name)  # it summarises every built-in stage before it (gandiff.stages)
    example = "gandiff report"
    config_keys = ("benchmark",)
    ignore_keys = ("benchmark.batch_size",)
    rebuild_on_new_inputs = True  # a summary: an evaluate item redone (dlib installed since) rebuilds it

    def upstream_for(self, cfg: Any) -> tuple[str, ...]:
        from gandiff.diffusion.generate_stage import generation_source

        gan_only = generation_source(cfg) == "gan"  # no DreamBooth stage in a GAN-only run
        return tuple(s for s in self.upstream if not (gan_only and s == "dreambooth"))

    def items(self, ctx: StageContext) -> list[str]:
        return ["report"]

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        from gandiff.evaluation.report import build_report

        records = {s: read_json(d / "stage.json") for s, d in ctx.inputs.items()}
        ref = ctx.cfg.benchmark.get("reference_distribution")
        rep = build_report(
            f"gandiff report: {ctx.cfg.experiment_name}", records, ctx.input_dir("evaluate"),
            identities_dir=ctx.input_dir("identities"), generate_dir=ctx.input_dir("generate"),
            curate_dir=ctx.input_dir("curate"), reference_path=str(ref) if ref else None,
            diffusion="dreambooth" in ctx.inputs)
        files = rep.write(ctx.dir, "report")
        ctx.items.put("report", {"images": len(rep.images), "sections": sum(b[0] == "h2" for b in rep.blocks)},
                      list(files.values()))
        if ctx.tracker is not None:
            self._track(ctx, rep, files)

    def _track(self, ctx: StageContext, rep: Any, files: dict[str, Path]) -> None:
        for name, _, caption in rep.images:
            ctx.tracker.log_image(f"report/{name}", files[name], caption=caption)
        metrics = read_json(ctx.input_dir("evaluate") / "metrics.json")
        from gandiff.evaluation.stage import EvaluateStage

        ctx.tracker.log_table("report/metrics", [EvaluateStage._flat(r) for r in metrics.get("items", {}).values()])
        from gandiff.evaluation.field_table import field_rows, field_summary, load_published

        # The field's table: this run's benchmark accuracies (summary numbers) beside the published datasets'.
        items = metrics.get("items", {})
        ctx.tracker.log_summary("field", field_summary(items))
        ctx.tracker.log_table("report/field_table", field_rows([(ctx.cfg.experiment_name, items)], load_published())[0])
        ctx.tracker.log_artifact_ref(f"dataset-{ctx.input_dir('export').name}", ctx.input_dir("export"), kind="dataset")
        ctx.tracker.log_artifact_ref(f"report-{ctx.key}", files["html"], kind="report")

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        row = ctx.items.get("report")
        return {"html": str(ctx.dir / "report.html"), "markdown": str(ctx.dir / "report.md"), **row}


def report_claims(report_dir: str | Path) -> list[str]:
    """The sentences of the report's claims section (``claims_summary``, GAN variations / every generated face /
    the export, then what diffusion did), from the inputs that the report in ``report_dir`` was built on (its
    ``stage.json``), the way ``ReportStage.process`` gives them to ``build_report``."""
    from gandiff.evaluation.report import claims_summary

    report_dir = Path(report_dir)
    inputs = read_json(report_dir / "stage.json").get("inputs", {})
    run_dir = report_dir.parent.parent
    folder = {s: run_dir / s / inp["key"] for s, inp in inputs.items()}
    items = read_json(folder["evaluate"] / "metrics.json").get("items", {})
    export = read_json(folder["export"] / "stage.json") if "export" in folder else None
    return claims_summary(items, export, diffusion="dreambooth" in inputs)
