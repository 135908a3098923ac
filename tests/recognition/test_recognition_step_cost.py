"""What a training step costs beyond the model: no host sync per step, and ``compile`` covering the head."""

from __future__ import annotations

import shutil
import traceback

import lightning as L
import pytest
import torch
from .conftest import TinyNet, pattern_faces, tiny_module

from gandiff.recognition.datamodule import FaceDataModule
from gandiff.recognition.train import build_trainer, fit_recognizer

FIT = {"accelerator": "cpu", "devices": 1, "gradient_clip_val": 5.0, "export": False}


class _HostReads:
    """Counts Python-level reads of tensor values (``.item()``, ``bool()``, ``float()``, ``int()``,
    ``.tolist()``) outside data loading: on a GPU each of them waits for the device. (The loader's host-side
    tensors, e.g. the random flips of the augmentations, never touch the device.)"""

    NAMES = ("item", "__bool__", "__float__", "__int__", "tolist")
    LOADING = ("/torchvision/", "/torch/utils/data/", "/gandiff/recognition/datamodule.py",
               "/gandiff/recognition/augmentations.py")

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **k):
                stack = traceback.extract_stack(limit=12)
                if not any(part in frame.filename for frame in stack for part in self.LOADING):
                    self.count += 1
                return _original(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _fit(out, steps: int, log_every: int, nan_every: int, monkeypatch=None):
    L.seed_everything(0, verbose=False)
    dm = FaceDataModule(pattern_faces(4, 40), batch_size=4, seed=0, heldout="none")  # 40 batches per epoch
    module = tiny_module(dm.num_classes, nan_check_every=nan_every)
    reads = _HostReads(monkeypatch) if monkeypatch is not None else None
    metrics = fit_recognizer(module, dm, out, max_steps=steps, max_epochs=1, log_every_n_steps=log_every,
                             checkpoint_every_n_steps=10**6, **FIT)
    if monkeypatch is not None:
        monkeypatch.undo()
    return metrics, (reads.count if reads else 0)


def test_host_reads_grow_with_logged_steps_and_checks_only(tmp_path, monkeypatch):
    """10 more steps add 1 log step (every 10) and 2 NaN checks (every 5): a handful of reads, not one per step
    (Lightning's progress-bar conversion of a logged loss read it after every step)."""
    _, short = _fit(tmp_path / "a", 10, 10, 5, monkeypatch)
    _, long = _fit(tmp_path / "b", 20, 10, 5, monkeypatch)
    assert long - short <= 1 + 2 + 2, (short, long)  # a little slack for Lightning's own bookkeeping


def test_loss_is_logged_on_log_steps_with_the_history_value(tmp_path):
    L.seed_everything(0, verbose=False)
    dm = FaceDataModule(pattern_faces(4, 40), batch_size=4, seed=0, heldout="none")
    module = tiny_module(dm.num_classes)
    trainer, history = build_trainer(tmp_path, accelerator="cpu", devices=1, max_steps=7, max_epochs=1,
                                     log_every_n_steps=3, validate=False, progress_bar=False)
    trainer.fit(module, datamodule=dm)
    assert [r["step"] for r in history.loss] == [3, 6, 7]  # every 3 steps and the last
    assert "train/loss" not in trainer.progress_bar_metrics
    assert float(trainer.callback_metrics["train/loss"]) == history.loss[-1]["loss"]


def test_progress_bar_shows_the_history_loss(tmp_path):
    from gandiff.recognition.train import HistoryProgressBar

    trainer, history = build_trainer(tmp_path, accelerator="cpu", devices=1, max_steps=1, progress_bar=True)
    (bar,) = [c for c in trainer.callbacks if isinstance(c, HistoryProgressBar)]
    assert trainer.progress_bar_callback is bar
    history.loss.append({"step": 1, "epoch": 0, "loss": 2.5, "lr": 0.1})
    assert bar.get_metrics(trainer, None)["loss"] == "2.5"
    trainer, _ = build_trainer(tmp_path, accelerator="cpu", devices=1, max_steps=1, progress_bar=False)
    assert trainer.progress_bar_callback is None


def _compile_unavailable() -> str | None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        return "torch.compile (inductor) needs a C compiler on CPU and none is installed"
    try:
        torch.compile(lambda x: x * 2)(torch.ones(2))
    except Exception as e:  # noqa: BLE001 - any failure means compile cannot run here
        return f"torch.compile does not run here: {type(e).__name__}: {str(e)[:200]}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("head", ["arcface", "adaface"])
def test_compile_covers_backbone_and_head_and_keeps_state_dict_keys(tmp_path, head):
    reason = _compile_unavailable()
    if reason:
        pytest.skip(reason)
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import RecognitionModule

    def run(compile: bool, out):
        L.seed_everything(0, verbose=False)
        dm = FaceDataModule(pattern_faces(4, 8), batch_size=8, seed=0, heldout="none")
        spec = {"name": head, "num_classes": dm.num_classes, "embedding_size": 32, "scale": 16.0, "margin": 0.2}
        module = RecognitionModule(TinyNet(32), build_head(**spec), None, spec, learning_rate=0.1,
                                   warmup_epochs=0.0, compile=compile)
        metrics = fit_recognizer(module, dm, out, max_steps=3, max_epochs=1, log_every_n_steps=1, **FIT)
        return module, metrics

    plain, plain_metrics = run(False, tmp_path / "plain")
    compiled, compiled_metrics = run(True, tmp_path / "compiled")
    assert compiled.backbone._compiled_call_impl is not None and compiled.head._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())
    for (k, a), (_, b) in zip(plain.state_dict().items(), compiled.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=k)
    torch.testing.assert_close([r["loss"] for r in compiled_metrics["loss"]],
                               [r["loss"] for r in plain_metrics["loss"]], rtol=1e-3, atol=1e-4)
    # The compiled run's checkpoint loads into an uncompiled module, key for key.
    (ckpt,) = (tmp_path / "compiled" / "checkpoints").glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    plain.load_state_dict(state, strict=True)
