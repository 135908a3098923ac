"""scripts/bench: pinned thread counts, and the evaluate bench's --json through all.py's reader."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"


def _load(name: str):
    """A bench script as module ``bench_<name>`` (not ``evaluate``: that would shadow the PyPI package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)  # the script puts scripts/bench on sys.path for its own ``harness`` import
    return mod


harness = _load("harness")


def test_pinned_threads_pins_blas_and_torch_and_restores():
    torch = pytest.importorskip("torch")
    import numpy as np  # noqa: F401  (its BLAS is the pool to pin)
    from threadpoolctl import threadpool_info

    before_torch = torch.get_num_threads()
    before_pools = [p["num_threads"] for p in threadpool_info()]
    with harness.pinned_threads(1) as line:
        assert all(p["num_threads"] == 1 for p in threadpool_info())
        assert torch.get_num_threads() == 1
        assert line.startswith("threads: 1 (") and "torch=1" in line
    assert torch.get_num_threads() == before_torch
    assert [p["num_threads"] for p in threadpool_info()] == before_pools
    with pytest.raises(ValueError, match="threads=0"):
        with harness.pinned_threads(0):
            pass


def test_evaluate_bench_writes_its_thread_count_and_headline(tmp_path, capsys):
    evaluate = _load("evaluate")

    out = tmp_path / "e.json"
    evaluate.main(["--n", "300", "--ids", "30", "--dim", "16", "--templates", "50", "--pairs", "500",
                   "--rounds", "2", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "threads: 1 (" in printed and "all-pairs scores, N = 300" in printed
    data = json.loads(out.read_text())
    assert data["bench"] == "evaluate" and data["meta"]["threads"] == 1
    comps = harness.read_comparisons(out)["comparisons"]  # what all.py reads
    assert [c.name for c in comps] == ["all-pairs scores, N = 300"]
    assert comps[0].rounds == 2 and "1 thread(s)" in comps[0].gandiff and "1 thread(s)" in comps[0].reference
    with pytest.raises(SystemExit):
        evaluate.main(["--threads", "0"])


def test_all_py_passes_json_to_every_bench():
    """No bench is special-cased: all.py hands --json to each script, and each script accepts it."""
    text = (BENCH / "all.py").read_text()
    assert 'name == "curate"' not in text and '"--json", str(out)' in text
    all_py = _load("all")

    for name in all_py.QUICK:
        assert '"--json"' in (BENCH / f"{name}.py").read_text(), name
