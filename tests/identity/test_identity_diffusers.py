"""Unconditional diffusers models as identity sources: per-seed determinism, pipeline parity, SDEdit variations.

Tiny random UNets saved by the fixtures in diffusers' folder layout and loaded through the same
``from_pretrained`` path a hub model takes (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gandiff.identity.diffusers_source import DiffusersSource, latents_to_seeds, seeds_to_latents


def assert_same_image(a, b):
    """Equal up to the last float bits of a batched UNet (kernels may differ by batch size): at most one
    level on a few pixels. A seed sharing its generator with its batch changes every pixel."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.max() <= 1 and (d > 0).mean() < 0.01, (d.max(), (d > 0).mean())


def test_seeds_round_trip_exactly_through_float32_latents():
    seeds = [0, 1, 65535, 65536, 123_456_789, 2**32 - 1]
    w = seeds_to_latents(seeds)
    assert w.dtype == np.float32 and w.shape == (6, 2) and latents_to_seeds(w) == seeds
    with pytest.raises(ValueError, match="cannot be edited"):
        latents_to_seeds(w + 0.5)
    with pytest.raises(ValueError, match="must be in"):
        seeds_to_latents([2**32])


def test_ddpm_image_depends_only_on_its_seed_and_equals_ddpm_pipeline(tiny_ddpm_folder):
    from diffusers import DDPMPipeline

    # The folder's DDPM scheduler: fresh noise at every step, drawn from each sample's own generator.
    src = DiffusersSource(str(tiny_ddpm_folder), scheduler=None, steps=4, batch_size=2)
    assert src.resolution == 16 and not src.editable and src.scheduler_cls.__name__ == "DDPMScheduler"
    seeds = [5, 7, 2**32 - 1]
    images = src.render(src.to_w(src.sample(seeds), truncation=0.7))  # truncation ignored
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert not np.array_equal(images[0], images[1])
    # Other batch compositions (alone; reversed beside a new seed, split [11, 7] + [5]): the same images.
    alone = src.render(src.sample([2**32 - 1]))
    mixed = src.render(src.sample([11, 7, 5]))
    assert_same_image(alone[0], images[2])
    assert_same_image(mixed[1], images[1])
    assert_same_image(mixed[2], images[0])
    # A seed rendered alone is exactly diffusers' own pipeline run with that seed's generator.
    pipe = DDPMPipeline.from_pretrained(tiny_ddpm_folder)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(generator=torch.Generator().manual_seed(2**32 - 1), num_inference_steps=4, output_type="np").images
    np.testing.assert_array_equal(alone[0], (ref[0] * 255).round().astype(np.uint8))


def test_ldm_decodes_latents_through_its_vqvae_as_ldm_pipeline(tiny_ldm_folder):
    from diffusers import LDMPipeline

    src = DiffusersSource(str(tiny_ldm_folder), scheduler="ddim", steps=3, batch_size=2)
    assert src.decoder is not None and src.sample_shape == (3, 8, 8) and src.resolution == 16
    images = src.render(src.sample([3, 4, 5]))
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert_same_image(src.render(src.sample([5]))[0], images[2])
    pipe = LDMPipeline.from_pretrained(tiny_ldm_folder)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(generator=torch.Generator().manual_seed(5), num_inference_steps=3, output_type="np").images
    assert_same_image(images[2], (ref[0] * 255).round().astype(np.uint8))  # ours in a batch of 2, theirs alone


def test_sdedit_variations_are_seeded_and_stay_near_the_anchor_at_low_strength(tiny_ddpm_folder):
    src = DiffusersSource(str(tiny_ddpm_folder), scheduler=None, steps=8, variation_strength=0.25, batch_size=2)
    w = src.sample([7])[0]
    anchor = src.render(w[None])[0].astype(np.int32)
    images, edits = src.render_variations(w, [1, 2, 1])
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], images[2])  # same noise seed, same variation
    assert not np.array_equal(images[0], images[1])
    assert [e["noise_seed"] for e in edits] == [1, 2, 1] and {e["strength"] for e in edits} == {0.25}
    assert all(e["direction"] is None and e["method"] == "sdedit" for e in edits)
    # A fresh source (no cached anchor) with the seed alone in its batch makes the same variation.
    fresh = DiffusersSource(str(tiny_ddpm_folder), scheduler=None, steps=8, variation_strength=0.25)
    assert_same_image(fresh.render_variations(w, [2])[0][0], images[1])
    # Re-noising less of the schedule stays closer to the anchor (shrink scales the strength, capped at 1).
    near, near_edits = src.render_variations(w, list(range(4)), shrink=0.5)
    far, far_edits = src.render_variations(w, list(range(4)), shrink=8.0)
    assert near_edits[0]["strength"] == 0.125 and far_edits[0]["strength"] == 1.0
    assert np.abs(near - anchor).mean() < np.abs(far - anchor).mean()


def test_config_builds_it_and_bad_folders_are_named(tiny_ddpm_folder, tmp_path):
    from gandiff.config import compose
    from gandiff.identity.stage import build_source

    cfg = compose(["identity=ddpm_celebahq", f"identity.source.model={tiny_ddpm_folder}", "identity.source.steps=2",
                   f"paths.root={tmp_path}", "logger=none"])
    src = build_source(cfg, "cpu")
    assert isinstance(src, DiffusersSource) and src.steps == 2 and src.scheduler_cls.__name__ == "DDIMScheduler"
    assert src.render(src.sample([0])).shape == (1, 16, 16, 3)

    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        DiffusersSource(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "PNDMScheduler"]}))
    with pytest.raises(ValueError, match="'unet' is a UNet2DConditionModel; expected UNet2DModel"):
        DiffusersSource(str(tmp_path))
    with pytest.raises(ValueError, match="variation_strength=0"):
        DiffusersSource(str(tiny_ddpm_folder), variation_strength=0)
