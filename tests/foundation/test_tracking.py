"""Trackers: CSV files, and W&B offline runs that are closed even when the job fails."""

from __future__ import annotations

import csv
import json

import pytest

from gandiff.tracking import open_tracker


def test_csv_tracker_writes_metrics_and_summaries(tmp_path):
    with open_tracker("csv", tmp_path, name="t") as t:
        t.log_metrics({"loss": 1.5}, step=0)
        t.log_metrics({"loss": 1.0, "acc": 0.5}, step=1)
        t.log_summary("train", {"final_loss": 1.0})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["loss"] for r in rows] == ["1.5", "1.0"] and rows[1]["acc"] == "0.5" and rows[0]["acc"] == ""
    assert json.loads((tmp_path / "summary.json").read_text()) == {"train": {"final_loss": 1.0}}


def test_failed_wandb_job_is_closed_and_the_next_one_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(RuntimeError, match="boom"):
        with open_tracker("wandb", tmp_path, name="job0", mode="offline") as t:
            t.log_metrics({"loss": 1.0}, step=0)
            raise RuntimeError("boom")
    with open_tracker("wandb", tmp_path, name="job1", mode="offline") as t:
        t.log_metrics({"loss": 0.5}, step=0)
        first = t.run.id
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and any(first in r.name for r in runs)
