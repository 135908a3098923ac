"""The evaluate stage's result files name their inputs by stage and key, not by the folder the run is in."""

from __future__ import annotations

import json

from gandiff.artifacts import ItemStore
from gandiff.config import compose
from gandiff.pipeline import StageContext


def _evaluate(root, builders):
    """The same small run under ``root`` (upstream folders at ``<root>/<stage>/<key>``, as the pipeline lays
    them out), evaluated in-process; returns the evaluate folder."""
    from gandiff.evaluation.stage import EvaluateStage

    inputs = {"identities": builders.identities(root / "identities" / "k1", n_ids=3, per_id=2),
              "curate": builders.curate(root / "curate" / "k2", n_ids=3, per_id=3),
              "export": builders.export(root / "export" / "k3", n_ids=3, per_id=2),
              "train": builders.train(root / "train" / "k4")}
    cfg = compose([f"paths.root={root}", "logger=none", "device=cpu"])
    out = root / "evaluate" / "k5"
    ctx = StageContext(name="evaluate", cfg=cfg, run_dir=root, dir=out, key="k5", inputs=inputs, shard_index=0,
                       shard_count=1, items=ItemStore(out))
    stage = EvaluateStage()
    keys = stage.items(ctx)
    stage.process(ctx, keys)
    stage.merge(ctx, keys)
    return out


def test_two_evaluations_under_different_roots_write_the_same_bytes(tmp_path, builders):
    a = _evaluate(tmp_path / "a", builders)
    b = _evaluate(tmp_path / "somewhere" / "else" / "b", builders)
    files_a = {p.relative_to(a).as_posix(): p.read_bytes() for p in sorted(a.rglob("*")) if p.is_file()}
    files_b = {p.relative_to(b).as_posix(): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()}
    assert {"metrics.json", "metrics.parquet", "histograms/export-face.json", "histograms/gan-face.json",
            "histograms/generate-face.json", "items/heldout-recognizer.json"} <= set(files_a)
    assert sorted(files_a) == sorted(files_b)
    assert [k for k in files_a if files_a[k] != files_b[k]] == []
    # ... because the inputs are named by stage and key:
    assert json.loads(files_a["histograms/export-face.json"])["metadata"]["dataset"] == "export/k3/imagefolder"
    items = json.loads(files_a["metrics.json"])["items"]
    assert items["generate-face"]["dataset"] == "curate/k2" and items["gan-face"]["dataset"] == "identities/k1"
    assert items["heldout-recognizer"]["dataset"] == "train/k4/heldout.bin"
    assert str(tmp_path) not in "".join(v.decode("latin-1") for v in files_a.values())
