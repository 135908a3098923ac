"""Every `gandiff run` ends on the terminal with the report's path and the claims the report states."""

from __future__ import annotations

import pytest

from gandiff.artifacts import ItemStore, atomic_write_json
from gandiff.config import compose
from gandiff.pipeline import StageContext

from .test_eval_reruns import _evaluate

KEYS = {"identities": "k1", "curate": "k2", "export": "k3", "train": "k4", "evaluate": "k5", "dreambooth": "k7",
        "generate": "k8"}


@pytest.fixture
def report_dir(tmp_path, builders):
    """A finished report stage folder at ``<root>/report/k6``, over upstream folders laid out as the pipeline
    does (``<root>/<stage>/<key>``, each with its stage.json), built by the real ReportStage."""
    from gandiff.evaluation.report_stage import ReportStage

    root = tmp_path / "run"
    _evaluate(root, builders)
    inputs = {s: root / s / k for s, k in KEYS.items()}
    for s, d in inputs.items():
        d.mkdir(parents=True, exist_ok=True)
        counts = {"images": 6, "empty": False} if s == "export" else {"items": 3}
        config = {"curation": {"min_anchor_similarity": 0.3}} if s == "export" else {}
        atomic_write_json(d / "stage.json", {"stage": s, "key": d.name, "config": config, "counts": counts})
    cfg = compose([f"paths.root={tmp_path}", "logger=none", "device=cpu"])
    out = root / "report" / "k6"
    ctx = StageContext(name="report", cfg=cfg, run_dir=root, dir=out, key="k6", inputs=inputs, shard_index=0,
                       shard_count=1, items=ItemStore(out))
    stage = ReportStage()
    stage.process(ctx, ["report"])
    counts = stage.merge(ctx, ["report"])
    atomic_write_json(out / "stage.json", {"stage": "report", "key": "k6", "counts": counts,
                                           "inputs": {s: {"key": k, "outputs": "x"} for s, k in KEYS.items()}})
    return out


def test_the_report_lines_are_its_path_and_its_own_claim_sentences(report_dir):
    from gandiff.cli import report_lines

    lines = report_lines([{"stage": "evaluate", "status": "done"},
                          {"stage": "report", "status": "up-to-date", "dir": str(report_dir)}])
    assert lines[0] == f"report: {report_dir / 'report.html'} (Markdown: {report_dir / 'report.md'})"
    claims = [ln.removeprefix("  - ") for ln in lines[1:]]
    assert [c.split(" (")[0] for c in claims[:3]] == [
        "GAN variations alone", "Diffusion, every generated face", "Diffusion, the exported selection"]
    md = (report_dir / "report.md").read_text()
    assert all(c in md for c in claims)  # the very sentences the report states, not a re-derivation


@pytest.mark.parametrize("status", ["done", "up-to-date"])
def test_every_run_ends_with_the_report(report_dir, monkeypatch, capsys, status):
    from gandiff import cli, pipeline

    results = [{"stage": s, "status": status, "dir": str(report_dir.parent.parent / s / k)}
               for s, k in KEYS.items()] + [{"stage": "report", "status": status, "dir": str(report_dir)}]
    monkeypatch.setattr(pipeline, "run_pipeline", lambda cfg, tracker=None, **kw: results)
    cfg = compose([f"paths.root={report_dir.parent.parent.parent}", "logger=none"])
    assert cli._task(cfg, "run")["report"] == status
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("report: ") and str(report_dir / "report.html") in out[0]
    assert out[1].startswith("  - GAN variations alone (gan-face")


def test_a_run_that_stops_before_the_report_says_so(monkeypatch, capsys, tmp_path):
    from gandiff import cli, pipeline

    monkeypatch.setattr(pipeline, "run_pipeline",
                        lambda cfg, tracker=None, **kw: [{"stage": "generate", "status": "shard-done", "dir": "x"}])
    cli._task(compose([f"paths.root={tmp_path}", "logger=none"]), "run")
    assert capsys.readouterr().out.startswith("report: not made by this run (it ended at generate: shard-done)")
