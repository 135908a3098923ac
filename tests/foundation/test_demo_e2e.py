"""`gandiff run` on the embedded demo, end to end as a user runs it, then again: the second run does no work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gandiff.artifacts import read_json
from gandiff.pipeline import STAGE_ORDER


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 5 min on 2 idle cores (DreamBooth under 3 of them); slack for slower runners
def test_demo_runs_every_stage_then_a_rerun_does_nothing(tmp_path):
    env = {**os.environ, "GANDIFF_ROOT": str(tmp_path), "WANDB_MODE": "disabled"}
    first = subprocess.run([sys.executable, "-m", "gandiff.cli", "run"], capture_output=True, text=True,
                           timeout=1500, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in STAGE_ORDER:  # every stage finished under the demo's run folder
        done = list((tmp_path / "demo" / stage).glob("*/stage.json"))
        assert len(done) == 1, f"{stage}: {done}"
    identities = read_json(next((tmp_path / "demo" / "identities").glob("*/stage.json")))["counts"]
    assert identities["identities"] == 6
    report = next((tmp_path / "demo" / "report").glob("*/report.html"))
    assert "<img" in report.read_text()
    # The method works in miniature: generated images pass curation and a recognizer trains on them.
    export = read_json(next((tmp_path / "demo" / "export").glob("*/stage.json")))["counts"]
    assert not export["empty"] and export["identities"] >= 2, export
    train = read_json(next((tmp_path / "demo" / "train").glob("*/stage.json")))["counts"]
    assert train["training"] == "trained" and train["val_accuracy"] > 0.5, train
    assert "diffusion added variation" in report.read_text()

    second = subprocess.run([sys.executable, "-m", "gandiff.cli", "run"], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "everything is up to date: nothing to do" in second.stderr
    assert second.stderr.count("up to date in") == len(STAGE_ORDER)
