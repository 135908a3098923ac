"""`gandiff train trainer.strategy=ddp` on 2 CPU processes (gloo), through the installed command line.

Lightning starts rank 1 by re-running the command line; rank 1 must find its command, train, and write
nothing: one stage folder, one record, rank 0's metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gandiff.config import compose
from gandiff.pipeline import stage_dir

from .test_recognition_stage import _fake_export

GANDIFF = Path(sys.executable).with_name("gandiff")


@pytest.mark.skipif(not GANDIFF.exists(), reason="the gandiff console script is not installed next to python")
def test_ddp_on_two_cpu_processes_through_the_cli(tmp_path):
    overrides = ["logger=csv", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                 "trainer.max_steps=4", "trainer.batch_size=8", "trainer.heldout_fraction=0.34",
                 "recognizer.embedding_size=32", "trainer.precision=32-true", "trainer.num_workers=0"]
    cfg = compose([f"paths.root={tmp_path}", *overrides])
    _fake_export(cfg)  # 4 identities x 12 images
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")}
    env.update(GANDIFF_ROOT=str(tmp_path), OMP_NUM_THREADS="1")
    p = subprocess.run([str(GANDIFF), "train", *overrides], capture_output=True, text=True, timeout=300,
                       env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    d = stage_dir(cfg, "train")
    metrics = json.loads((d / "metrics.json").read_text())
    # Two ranks of 8 images a step: 2 steps per epoch of 32 training images, and global step 4 at the end.
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    assert metrics["epochs"] == 2
    assert json.loads((d / "stage.json").read_text())["counts"]["training"] == "trained"
    assert [p.name for p in (d / "items").iterdir()] == ["model.json"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in p.stderr + p.stdout  # rank 1 really ran
