"""The rehearsal's stand-ins, built tiny by the same builder, load through the loaders real downloads go through."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from gandiff import rehearsal

pytestmark = pytest.mark.slow  # ~30 s of CPU: every stand-in built and loaded


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("standins")
    return rehearsal.build_standins(out, size="tiny", bin_pairs=10, ijb_templates=4)


def test_sd_folders_float32_and_fp16_variant_only(standins):
    from diffusers import StableDiffusionPipeline

    from gandiff.diffusion.components import load_components

    full, half = standins["sd15"], standins["sd15_fp16"]
    index = json.loads((full / "model_index.json").read_text())
    assert {k for k in index if not k.startswith("_")} == {
        "feature_extractor", "requires_safety_checker", "safety_checker", "scheduler", "text_encoder",
        "tokenizer", "unet", "vae"}
    assert (full / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(half.glob("*/diffusion_pytorch_model.safetensors")) and not list(half.glob("*/model.safetensors"))
    assert (half / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (half / "text_encoder" / "model.fp16.safetensors").is_file()
    # The hub layout as diffusers reads it, safety checker and feature extractor included.
    pipe = StableDiffusionPipeline.from_pretrained(str(full))
    assert type(pipe.safety_checker).__name__ == "StableDiffusionSafetyChecker"
    assert pipe.feature_extractor.crop_size == {"height": 224, "width": 224}
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    pipe16 = StableDiffusionPipeline.from_pretrained(str(half), variant="fp16", dtype=torch.float16)
    assert pipe16.unet.dtype == torch.float16 and type(pipe16.safety_checker).__name__ == "StableDiffusionSafetyChecker"
    from safetensors import safe_open

    with safe_open(str(half / "unet" / "diffusion_pytorch_model.fp16.safetensors"), "pt") as f:
        assert f.get_tensor("conv_in.weight").dtype == torch.float16
    # gandiff's loader: both folders (the variant detected, or named), the same weights up to fp16 rounding.
    a = load_components(str(full), "float32", "cpu")
    b = load_components(str(half), "float32", "cpu")
    c = load_components(str(half), "float32", "cpu", variant="fp16")
    assert b is c and b.unet.dtype == torch.float32
    wa, wb = a.unet.conv_in.weight, b.unet.conv_in.weight
    assert torch.equal(wa.half().float(), wb) and not torch.equal(wa, wb)


def test_sd_folder_without_the_configured_variant_is_one_line(standins, tmp_path):
    from gandiff.diffusion.components import load_components
    from gandiff.schema import ConfigError

    with pytest.raises(FileNotFoundError, match=r"dreambooth\.variant='bf16': .*unet has no \*\.bf16\.safetensors"):
        load_components(str(standins["sd15_fp16"]), "float32", "cpu", variant="bf16")
    with pytest.raises(FileNotFoundError, match=r"dreambooth\.variant='fp16': .*has no \*\.fp16"):
        load_components(str(standins["sd15"]), "float32", "cpu", variant="fp16")
    import shutil

    broken = tmp_path / "sd"
    shutil.copytree(standins["sd15"], broken)
    for f in (broken / "vae").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_components(str(broken), "float32", "cpu")
    assert "vae has no weight files" in str(e.value) and "\n" not in str(e.value)
    from gandiff.diffusion.schema import DreamBoothConfig

    assert DreamBoothConfig(variant="fp16").variant == "fp16"
    with pytest.raises(ConfigError, match="dreambooth.variant"):
        DreamBoothConfig(variant="fp16/../x")


def test_variant_setting_reaches_the_dreambooth_stage(standins):
    from gandiff.config import compose

    cfg = compose(["dreambooth.variant=fp16", f"dreambooth.base={standins['sd15_fp16']}"])
    assert cfg.dreambooth.variant == "fp16"


def test_stylegan_pickles_load_natively(standins):
    from gandiff.identity.stylegan import StyleGANSource, generate_images, load_generator
    from gandiff.identity.stylegan_pickle import load_nvlabs_pickle

    for key, arch, kwargs in (("stylegan3", "stylegan3", rehearsal.TINY_SG3_R),
                              ("stylegan2", "stylegan2", rehearsal.TINY_SG2)):
        data = load_nvlabs_pickle(standins[key])
        assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
        assert data["G_ema"].init_kwargs == kwargs
        G = load_generator(standins[key])
        assert G.arch == arch and G.img_resolution == 16
        img = generate_images(G, [0, 1], truncation=0.7)
        assert img.shape == (2, 16, 16, 3) and img.std() > 0
        src = StyleGANSource(str(standins[key]), device="cpu")
        assert np.array_equal(src.render(src.to_w(src.sample([0, 1]), 0.7)), img)
    assert rehearsal.SG3_R_FFHQ_1024["channel_base"] == 65536 and rehearsal.SG3_R_FFHQ_1024["conv_kernel"] == 1


def test_buffalo_l_pack_fairface_and_benchmarks(standins):
    from gandiff.evaluation.ijb import read_landmarks, read_template_media, read_template_pairs
    from gandiff.evaluation.verification import load_bin
    from gandiff.face.attributes import FairFaceClassifier
    from gandiff.face.detectors import SCRFDDetector
    from gandiff.face.embedders import OnnxEmbedder

    pack = standins["buffalo_l"]
    det = SCRFDDetector(pack / "det_10g.onnx", score_threshold=0.0, max_faces=1, input_size=(128, 128), device="cpu")
    assert det.strides == (8, 16, 32) and not det.batched
    assert tuple(det.model.output_names) == rehearsal.SCRFD_OUTPUTS
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    (face,) = det.detect(image)
    x1, y1, x2, y2 = face.box
    assert x2 > x1 and y2 > y1 and face.landmarks.shape == (5, 2)
    assert face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[2, 1] < face.landmarks[3, 1]
    emb = OnnxEmbedder(pack / "w600k_r50.onnx", device="cpu")
    assert emb.dim == 32
    clf = FairFaceClassifier(standins["fairface"], device="cpu")
    (attrs,) = clf.classify_aligned(np.full((1, 112, 112, 3), 128, np.uint8))
    assert attrs.gender in ("male", "female") and attrs.race is not None
    for name in rehearsal.VERIFICATION_NAMES:
        images, issame = load_bin(standins["verification"] / f"{name}.bin")
        assert images.shape[0] == 20 and issame.sum() == 5
    meta = standins["ijbc"] / "meta"
    names, tids, mids = read_template_media(meta / "ijbc_face_tid_mid.txt")
    t1, t2, label = read_template_pairs(meta / "ijbc_template_pair_label.txt")
    lm_names, lmk, score = read_landmarks(meta / "ijbc_name_5pts_score.txt")
    assert len(names) == 8 and list(lm_names) == list(names) and lmk.shape == (8, 5, 2)
    assert len(t1) == 6 and label.sum() == 2
    assert all((standins["ijbc"] / "loose_crop" / n).is_file() for n in names)


def test_build_is_resumable_and_refuses_another_size(standins):
    out = standins["sd15"].parent
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rehearsal.build_standins(out, size="tiny", bin_pairs=10, ijb_templates=4)
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "standins.json"}
    assert all(before[k] == v for k, v in after.items())
    with pytest.raises(ValueError, match="size='tiny'"):
        rehearsal.build_standins(out, size="real")


def test_pickle_names_no_code(standins):
    """The stand-in pickles carry NVlabs' global names only; loading them with plain pickle needs those modules."""
    with pytest.raises(ModuleNotFoundError, match="torch_utils"):
        pickle.loads(standins["stylegan2"].read_bytes())
