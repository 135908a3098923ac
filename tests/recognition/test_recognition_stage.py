"""The train stage through the real config and pipeline, on a fake (but real-format) export folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from .conftest import pattern_faces

from gandiff.artifacts import atomic_write_json, read_table
from gandiff.config import compose
from gandiff.pipeline import StageError, run_stage, stage_dir


def _fake_export(cfg, empty: bool = False):
    """An export folder as the export stage leaves it: dataset.json, recordio/, stage.json last."""
    from gandiff.datasets.recordio import write_recordio

    d = stage_dir(cfg, "export")
    d.mkdir(parents=True)
    if empty:
        atomic_write_json(d / "dataset.json", {"empty": True, "reason": "curation selected no image"})
    else:
        faces = pattern_faces(4, 12)
        write_recordio(d / "recordio", [[faces.images[i] for i in np.flatnonzero(faces.labels == c)]
                                        for c in range(4)])
        atomic_write_json(d / "dataset.json", {"empty": False, "formats": ["recordio"]})
    atomic_write_json(d / "stage.json", {"stage": "export", "outputs": "fake", "counts": {}})
    return d


def test_empty_export_is_skipped_with_the_reason(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "logger=none"])
    _fake_export(cfg, empty=True)
    out = run_stage(cfg, "train")
    assert out["status"] == "done" and out["training"] == "skipped"
    assert "the export is empty: curation selected no image" in out["reason"]
    metrics = json.loads((stage_dir(cfg, "train") / "metrics.json").read_text())
    assert metrics["status"] == "skipped" and not (stage_dir(cfg, "train") / "backbone.onnx").exists()


def test_empty_export_can_be_an_error(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "logger=none", "trainer.on_empty=error"])
    _fake_export(cfg, empty=True)
    with pytest.raises(StageError, match="training skipped.*at least 2 identities"):
        run_stage(cfg, "train")


def test_trains_on_the_export_and_is_up_to_date_after(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "logger=none", "trainer.max_steps=4", "trainer.batch_size=8",
                   "trainer.heldout_fraction=0.34", "recognizer.embedding_size=32"])
    _fake_export(cfg)
    out = run_stage(cfg, "train")
    assert out["status"] == "done" and out["steps"] == 4 and out["num_identities"] == 4
    assert out["val_accuracy"] is not None
    d = stage_dir(cfg, "train")
    assert {"backbone.pt", "backbone.onnx", "metrics.json", "training.parquet"} <= {p.name for p in d.iterdir()}
    assert [r["step"] for r in read_table(d / "training.parquet")][-1] == 4
    assert run_stage(cfg, "train")["status"] == "up-to-date"


def test_speed_only_keys_do_not_change_the_stage_key(tmp_path):
    a = compose([f"paths.root={tmp_path}", "logger=none"])
    b = compose([f"paths.root={tmp_path}", "logger=none", "trainer.num_workers=7", "trainer.compile=true"])
    c = compose([f"paths.root={tmp_path}", "logger=none", "trainer.learning_rate=0.2"])
    assert stage_dir(a, "train") == stage_dir(b, "train") != stage_dir(c, "train")


def test_config_rules_name_the_key():
    from gandiff.schema import ConfigError

    with pytest.raises(ConfigError, match="recognizer.head='sphereface'"):
        compose(["logger=none", "recognizer.head=sphereface"])
    with pytest.raises(ConfigError, match="trainer.augment.random_erasing=1.5"):
        compose(["logger=none", "trainer.augment.random_erasing=1.5"])


def test_fewer_images_than_one_batch_is_skipped_or_an_error(tmp_path):
    common = [f"paths.root={tmp_path}", "logger=none", "trainer.batch_size=64", "trainer.accelerator=cpu",
              "trainer.precision=32-true", "trainer.num_workers=0"]
    cfg = compose(common)
    _fake_export(cfg)  # 48 images: fewer than one batch of 64
    out = run_stage(cfg, "train")
    assert out["training"] == "skipped" and "fewer than one batch (trainer.batch_size=64" in out["reason"]
    assert not (stage_dir(cfg, "train") / "backbone.pt").exists()
    strict = compose([*common, "trainer.on_empty=error"])
    with pytest.raises(StageError, match="training skipped: .*fewer than one batch.*lower trainer.batch_size"):
        run_stage(strict, "train")
