"""Identity shards as a Hydra sweep: several shard jobs plus the merge equal one unsharded run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from .test_stage_contract import stable, tree

HERE = Path(__file__).resolve().parent


def gandiff(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GANDIFF_ROOT": str(root), "PYTHONPATH": str(HERE), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "gandiff.cli", "run", *args, "stages=[toy_make]",
                           "+plugins.toy_make=toy_stages:ToyMake", "logger=none", "identity.num=14"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=root.parent)


@pytest.mark.parametrize("launcher", ["local", "submitit_local"])
def test_sharded_sweep_equals_unsharded_run(tmp_path, launcher):
    one = gandiff(tmp_path / "one")
    assert one.returncode == 0, one.stderr
    swept = gandiff(tmp_path / "swept", "-m", f"launcher={launcher}", "shard.count=3", "shard.index=range(0,3)")
    assert swept.returncode == 0, swept.stderr
    a = next((tmp_path / "one").glob("demo/toy_make/*"))
    b = next((tmp_path / "swept").glob("demo/toy_make/*"))
    assert a.name == b.name  # the shard split does not change the stage's key
    assert {k: v for k, v in tree(b).items() if not k.startswith("shards/")} == tree(a)
    assert sorted(p.name for p in (b / "shards").iterdir()) in (
        ["0-of-3.json", "1-of-3.json"], ["0-of-3.json", "2-of-3.json"], ["1-of-3.json", "2-of-3.json"],
        ["0-of-3.json", "1-of-3.json", "2-of-3.json"])  # every shard but the one that merged (or all, if tied)
    assert stable(b / "stage.json") == stable(a / "stage.json")
