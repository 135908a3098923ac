"""scripts/gpu_check.py runs on CPU with --small, so it cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_small_runs_every_section(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gpu_check.json"
    assert mod.main(["--small", "--device", "cpu", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    names = " ".join(r["name"] for r in rows)
    for section in ("dreambooth K=1", "dreambooth K=2", "generate batch", "train", "embed", "all-pairs"):
        assert section in names
    for r in rows:  # every figure measured, positive, with its same-run reference
        assert r["value"] > 0 and r["reference"] and r["reference"] > 0 and r["ratio"] > 0
    assert "## gpu_check" in capsys.readouterr().out
