"""The train stage writes the same bytes on every identical run: under another root, and after a kill + resume.

Compared: every file of the stage folder (backbone.pt, backbone.onnx, metrics.json, training.parquet, the
Lightning checkpoint, items/, config.json) byte for byte, and stage.json except its ``timings`` (wall and CPU
seconds, images/s, the finishing time: the only things that depend on the machine's speed and the clock).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gandiff.config import compose
from gandiff.pipeline import run_stage, stage_dir

from .test_recognition_stage import _fake_export

# 32 training images in batches of 8: 4 steps per epoch, 8 steps in all, a checkpoint every 2 steps.
OVERRIDES = ["logger=none", "trainer.max_steps=8", "trainer.batch_size=8", "trainer.heldout_fraction=0.34",
             "recognizer.backbone=mobilefacenet_small", "recognizer.embedding_size=32", "trainer.num_workers=0",
             "trainer.checkpoint_every_n_steps=2", "trainer.accelerator=cpu", "trainer.precision=32-true"]
pytestmark = pytest.mark.slow  # three short trainings: ~35 s of CPU


class _Killed(Exception):
    pass


def _train(root: Path, monkeypatch: pytest.MonkeyPatch | None = None, kill_at: int | None = None) -> Path:
    cfg = compose([f"paths.root={root}", *OVERRIDES])
    _fake_export(cfg)
    if kill_at is not None:
        from gandiff.recognition import train

        def killing(self, trainer, pl_module, batch, batch_idx, _orig=train.TrainingHistory.on_train_batch_start):
            if trainer.global_step == kill_at:
                raise _Killed(f"killed before step {kill_at + 1}")
            return _orig(self, trainer, pl_module, batch, batch_idx)

        with monkeypatch.context() as m:
            m.setattr(train.TrainingHistory, "on_train_batch_start", killing)
            with pytest.raises(_Killed):
                run_stage(cfg, "train")
        assert not (stage_dir(cfg, "train") / "stage.json").exists()
    assert run_stage(cfg, "train")["status"] == "done"
    return stage_dir(cfg, "train")


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "stage.json"}


def _record(d: Path) -> dict:
    rec = json.loads((d / "stage.json").read_text())
    timings = rec.pop("timings")
    assert {"seconds", "cpu_seconds", "finished", "train_images_per_second", "train_seconds"} <= set(timings)
    return rec


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("root_a"))


def test_two_trainings_under_different_roots_write_the_same_bytes(straight, tmp_path):
    other = _train(tmp_path / "elsewhere" / "root_b")
    assert straight.name == other.name  # the same stage key: nothing of the root is in the config that counts
    a, b = _files(straight), _files(other)
    assert {"backbone.pt", "backbone.onnx", "metrics.json", "training.parquet", "items/model.json"} <= set(a)
    assert [k for k in a if k.startswith("checkpoints/")] == ["checkpoints/epoch001-step00000008.ckpt"]
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert _record(straight) == _record(other)
    metrics = json.loads(a["metrics.json"])
    assert "images_per_second" not in metrics and metrics["steps"] == 8  # speed is a timing, not a result


def test_a_killed_and_resumed_training_writes_the_same_bytes(straight, tmp_path, monkeypatch):
    # Killed after the checkpoint at step 2, mid-epoch 0: the resumed run must keep epoch 1 whole (steps 5-8).
    resumed = _train(tmp_path / "root_c", monkeypatch, kill_at=3)
    a, c = _files(straight), _files(resumed)
    assert sorted(a) == sorted(c)  # one checkpoint left, as in the run never killed
    assert [k for k in a if a[k] != c[k]] == []
    assert _record(straight) == _record(resumed)
