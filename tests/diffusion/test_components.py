"""Component building and loading: the tiny model round-trips through diffusers' loader; CLIP tokenisation."""

from __future__ import annotations

import pytest


def test_tokenizer_tokenises_like_clip(tiny):
    ids = tiny.tokenizer("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # OpenAI CLIP's ids for this prompt
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:  # pragma: no cover - open_clip is installed as a weight package
        return
    ref = SimpleTokenizer()
    for text in ("a photo of sks woman, wearing sunglasses!", "Hello   wörld 123 café", "lit from the side"):
        assert tiny.tokenizer(text).input_ids[1:-1] == ref.encode(text)
    assert tiny.tokenizer.model_max_length == 77


def test_tiny_folder_loads_through_diffusers(tiny_base):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_base), safety_checker=None)
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.cross_attention_dim == 32
    assert (tiny_base / "model_index.json").exists()


def test_builtin_base_is_built_once_into_the_cache(tmp_path, monkeypatch):
    from gandiff.diffusion import components

    calls = []

    def fake_builder(out, seed):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "model_index.json").write_text("{}")

    monkeypatch.setitem(components.BUILTIN, "fake", fake_builder)
    a = components.resolve_base("builtin:fake", tmp_path)
    b = components.resolve_base("builtin:fake", tmp_path)
    assert a == b == str(tmp_path / "models" / "fake") and len(calls) == 1
    with pytest.raises(ValueError, match="unknown built-in model"):
        components.resolve_base("builtin:nope", tmp_path)


def test_missing_base_is_a_clear_error(tmp_path):
    from gandiff.diffusion.components import load_components

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_components(str(tmp_path / "nowhere"), "float32", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a diffusers folder"):
        load_components(str(tmp_path / "empty"), "float32", "cpu")
