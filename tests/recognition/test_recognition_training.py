"""Training end to end on CPU: learning, exact resume, NaN stop, checkpoints, backbone.pt / ONNX exports."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from .conftest import TinyNet, pattern_faces, tiny_module
from lightning.pytorch.callbacks import Callback

from gandiff.recognition.checkpoints import export_onnx, load_recognizer, read_checkpoint
from gandiff.recognition.datamodule import FaceDataModule
from gandiff.recognition.module import NonFiniteLossError, lr_factor, normalize_faces
from gandiff.recognition.train import fit_recognizer

FIT = {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 1, "gradient_clip_val": 5.0}


def test_lr_schedules():
    assert lr_factor(0, 10, 110) == pytest.approx(0.1) and lr_factor(9, 10, 110) == pytest.approx(1.0)
    assert lr_factor(10, 10, 110) == 1.0 and lr_factor(60, 10, 110) == pytest.approx(0.25)  # (1 - 0.5)^2
    assert lr_factor(60, 10, 110, "cosine") == pytest.approx(0.5)
    assert lr_factor(109, 10, 110, "poly") < 1e-3 and lr_factor(50, 0, 100, "constant") == 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """8 synthetic identities, a quarter of each identity's images held out as verification pairs."""
    L.seed_everything(0, verbose=False)
    dm = FaceDataModule(pattern_faces(8, 12), batch_size=8, seed=0, heldout="images", heldout_fraction=0.25)
    module = tiny_module(dm.num_classes)
    out = tmp_path_factory.mktemp("train")
    metrics = fit_recognizer(module, dm, out, max_epochs=8, val_every_n_epochs=4, **FIT)
    return module, metrics, out


def test_loss_falls_and_heldout_verification_beats_chance(trained):
    _, metrics, out = trained
    losses = [r["loss"] for r in metrics["loss"]]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert metrics["val_sets"] == {"heldout": 48}  # 8 ids x C(3, 2) mated pairs + as many non-mated
    assert metrics["val_accuracy"] > 0.75  # chance is 0.5
    assert metrics["steps"] == 72 and metrics["skipped_images"] == 0
    assert {"backbone.pt", "backbone.onnx", "metrics.json"} <= {p.name for p in out.iterdir()}


def test_checkpoint_loads_with_weights_only(trained):
    _, _, out = trained
    (ckpt,) = (out / "checkpoints").glob("*.ckpt")
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert data["global_step"] == 72 and data["hyper_parameters"]["optimizer"] == "sgd"
    assert data["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 7, "batches": 9}]
    sd = torch.load(out / "backbone.pt", weights_only=True)
    assert set(sd) == set(TinyNet().state_dict())  # bare backbone keys, no "backbone." prefix


class _Killed(Exception):
    pass


class _KillAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise _Killed(f"killed before step {self.step}")


def _run(out, steps, kill_at=None):
    L.seed_everything(0, verbose=False)
    dm = FaceDataModule(pattern_faces(4, 20), batch_size=8, seed=0, heldout="none",
                        augment={"flip": True, "crop_jitter": 2})
    module = tiny_module(dm.num_classes)
    callbacks = [_KillAt(kill_at)] if kill_at else []
    fit_recognizer(module, dm, out, max_steps=steps, max_epochs=100, checkpoint_every_n_steps=3,
                   export=False, callbacks=callbacks, **FIT)
    return module


def test_resume_after_a_kill_gives_the_same_weights(tmp_path):
    """10 batches per epoch; killed at step 7 (checkpoint at 6, mid-epoch), resumed to 14."""
    straight = _run(tmp_path / "a", 14)
    with pytest.raises(_Killed):
        _run(tmp_path / "b", 14, kill_at=7)
    resumed = _run(tmp_path / "b", 14)
    assert resumed.global_step == 14
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)


class _NaNAt(torch.nn.Module):
    def __init__(self, at_call: int):
        super().__init__()
        self.net, self.calls, self.at = TinyNet(), 0, at_call

    def forward(self, x):
        self.calls += 1
        y = self.net(x)
        return y * float("nan") if self.calls == self.at else y


@pytest.mark.parametrize("every", [1, 4])
def test_nan_loss_stops_with_step_and_batch_indices(tmp_path, faces, every):
    dm = FaceDataModule(faces, batch_size=8, seed=0, heldout="none")
    module = tiny_module(dm.num_classes, backbone=_NaNAt(3), nan_check_every=every)
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch["index"].tolist())

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2 \(epoch 0, batch 2") as e:
        fit_recognizer(module, dm, tmp_path, max_epochs=1, export=False, callbacks=[Record()], **FIT)
    assert str(seen[2][:8]) in str(e.value)


def test_onnx_export_matches_torch_through_the_face_toolkit(tmp_path, faces):
    from gandiff.face.embedders import OnnxEmbedder

    L.seed_everything(0, verbose=False)
    dm = FaceDataModule(faces, batch_size=8, seed=0, heldout="none")
    spec = {"name": "mobilefacenet_small", "embedding_size": 32, "dropout": 0.0, "fp16": False}
    from gandiff.recognition.backbones import build_backbone

    module = tiny_module(dm.num_classes, backbone=build_backbone(**spec))
    module.hparams.backbone_spec = spec
    fit_recognizer(module, dm, tmp_path, max_steps=2, **FIT)  # non-trivial BatchNorm statistics

    images = faces.images[:5]  # (5, 112, 112, 3) uint8 RGB
    module.eval()
    with torch.no_grad():
        ref = torch.nn.functional.normalize(module.backbone(normalize_faces(torch.from_numpy(images).permute(0, 3, 1, 2))))
    onnx = OnnxEmbedder(tmp_path / "backbone.onnx")
    np.testing.assert_allclose(onnx.embed(images), ref.numpy(), atol=1e-4)
    assert onnx.dim == 32

    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    again = load_recognizer(ckpt).eval()
    with torch.no_grad():
        torch.testing.assert_close(again.backbone(normalize_faces(torch.from_numpy(images).permute(0, 3, 1, 2))),
                                   module.backbone(normalize_faces(torch.from_numpy(images).permute(0, 3, 1, 2))))


def test_read_checkpoint_refuses_pickled_code(tmp_path):
    torch.save({"obj": _Killed("x")}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="weights_only=True"):
        read_checkpoint(tmp_path / "bad.ckpt")


def test_export_onnx_has_dynamic_batch(tmp_path):
    import onnx

    path = export_onnx(TinyNet(16).eval(), tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].name == "data" and graph.input[0].type.tensor_type.shape.dim[0].dim_param
