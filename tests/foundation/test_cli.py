"""The CLI as a process: help, one-line errors with a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gandiff.pipeline import STAGE_ORDER

GANDIFF = [sys.executable, "-m", "gandiff.cli"]


def run(*args: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GANDIFF_ROOT": str(root), "WANDB_MODE": "disabled"}
    return subprocess.run([*GANDIFF, *args], capture_output=True, text=True, timeout=120, env=env)


def test_help_lists_every_stage_with_an_example(tmp_path):
    out = run("--help", root=tmp_path)
    assert out.returncode == 0
    for stage in STAGE_ORDER:
        assert f"  {stage} " in out.stdout and f"gandiff {stage}" in out.stdout


@pytest.mark.parametrize("args,expected", [
    (["identities", "identity.num=-3"], "identity.num=-3: must be >= 1"),
    (["run", "shard.count=0"], "shard.count=0: must be >= 1"),
])
def test_bad_value_exits_nonzero_with_one_line(tmp_path, args, expected):
    out = run(*args, root=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and expected in errors[0]
    assert not (tmp_path / "demo" / "identities").exists()  # nothing was started


def test_unknown_key_and_unknown_command(tmp_path):
    out = run("identities", "identity.nmu=3", root=tmp_path)
    assert out.returncode != 0 and "nmu" in out.stderr and "Traceback" not in out.stderr
    out = run("identitis", root=tmp_path)
    assert out.returncode == 2 and "unknown command 'identitis'" in out.stderr


def test_missing_model_file_is_one_line_naming_the_key(tmp_path):
    out = run("identities", "face.embedder.model_path=/nope/sface.onnx", root=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "face.embedder.model_path='/nope/sface.onnx': no such file" in errors[0]
