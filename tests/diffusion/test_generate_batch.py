"""A batch mixing identities renders, for each sample, what diffusers renders with that identity's LoRA alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandiff.diffusion.generate import RenderSpec, attach_adapters, render_batch
from gandiff.diffusion.multi_lora import MultiLoRA, save_adapter


@pytest.fixture(scope="module")
def adapter_files(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    lora = MultiLoRA(tiny.unet, 2, rank=4)
    try:
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in lora.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        return [str(save_adapter(root / f"id{k}", k, lora)) for k in range(2)]
    finally:
        lora.detach()


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])  # deterministic and ancestral (per-step noise)
def test_mixed_batch_equals_each_identity_alone(tiny, adapter_files, scheduler):
    specs = [
        RenderSpec("a photo of sks man, smiling", "blurry", 11, 0),
        RenderSpec("a photo of sks woman", "blurry", 12, 1),
        RenderSpec("a photo of sks man, in a park", "", 13, 0),
    ]
    unet_lora, text_lora = attach_adapters(tiny, adapter_files)
    try:
        mixed = render_batch(tiny, specs, scheduler, 3, 5.0, 64, unet_lora, text_lora)
    finally:
        unet_lora.detach()
    from gandiff.diffusion.generate import make_scheduler

    pipe = tiny.pipeline(make_scheduler(scheduler, tiny.scheduler_config))
    for spec, img in zip(specs, mixed):
        pipe.load_lora_weights(str(adapter_files[spec.adapter]).rsplit("/", 1)[0])
        try:
            ref = pipe(
                spec.prompt,
                negative_prompt=spec.negative,
                num_inference_steps=3,
                guidance_scale=5.0,
                height=64,
                width=64,
                generator=torch.Generator().manual_seed(spec.seed),
            ).images[0]
        finally:
            pipe.unload_lora_weights()
        diff = np.abs(np.asarray(img, dtype=int) - np.asarray(ref, dtype=int))
        assert diff.max() <= 1, f"{spec}: max pixel difference {diff.max()}"
    # The adapters matter: the same prompt and seed through the other identity's adapter differs.
    unet_lora, text_lora = attach_adapters(tiny, adapter_files)
    try:
        other = render_batch(
            tiny, [RenderSpec(specs[0].prompt, "blurry", 11, 1)], scheduler, 3, 5.0, 64, unet_lora
        )
    finally:
        unet_lora.detach()
    assert np.abs(np.asarray(other[0], dtype=int) - np.asarray(mixed[0], dtype=int)).max() > 5
