"""Multi-identity LoRA: diffusers reads each adapter as that identity's LoRA, and batching never mixes identities."""

from __future__ import annotations

import pytest
import torch

from gandiff.diffusion.multi_lora import TEXT_TARGETS, UNET_TARGETS, MultiLoRA, read_adapter, save_adapter


def _randomise(*loras: MultiLoRA, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in loras:
            for p in lora.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_exported_adapter_is_what_diffusers_loads(tiny, tmp_path):
    """Slot k of the multi-LoRA == diffusers' pipeline with that slot's file loaded (UNet and text encoder)."""
    unet_lora = MultiLoRA(tiny.unet, 3, rank=4, alpha=8.0, targets=UNET_TARGETS)  # alpha != rank: scale 2
    text_lora = MultiLoRA(tiny.text_encoder, 3, rank=4, alpha=8.0, targets=TEXT_TARGETS)
    try:
        # 4 transformer blocks (down, mid, 2 up) x 2 attentions x q, k, v, out
        assert len(unet_lora.layers) == 32 and all(n.endswith(UNET_TARGETS) for n in unet_lora.layers)
        _randomise(unet_lora, text_lora)
        idx = [2, 0, 1, -1]
        unet_lora.set_index(idx)
        text_lora.set_index(idx)
        x, t = torch.randn(4, 4, 16, 16), torch.tensor([10, 300, 600, 999])
        emb = tiny.encode_text(["a photo of sks person"] * 4)  # (4, 77, 32)
        with torch.no_grad():
            out = tiny.unet(x, t, emb).sample
        for k in range(3):
            save_adapter(tmp_path / f"a{k}", k, unet_lora, text_lora)
    finally:
        unet_lora.detach()
        text_lora.detach()
    assert type(tiny.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q) is torch.nn.Linear

    parts = read_adapter(tmp_path / "a2" / "pytorch_lora_weights.safetensors")
    assert parts["unet"]["rank"] == 4 and parts["unet"]["alpha"] == 8.0 and "text_encoder" in parts
    some_key = next(iter(parts["unet"]["state"]))
    assert ".lora_A.weight" in some_key or ".lora_B.weight" in some_key

    pipe = tiny.pipeline()
    with torch.no_grad():
        base = tiny.unet(x, t, tiny.encode_text(["a photo of sks person"] * 4)).sample
    assert torch.allclose(out[3], base[3], atol=1e-6)  # index -1: the base model
    for n, k in enumerate(idx[:3]):
        pipe.load_lora_weights(str(tmp_path / f"a{k}"))
        try:
            with torch.no_grad():
                ref = tiny.unet(x, t, tiny.encode_text(["a photo of sks person"] * 4)).sample
        finally:
            pipe.unload_lora_weights()
        assert torch.allclose(out[n], ref[n], atol=1e-5), f"slot {k}"
        assert not torch.allclose(out[n], base[n], atol=1e-3)


def test_save_is_byte_deterministic(tiny, tmp_path):
    lora = MultiLoRA(tiny.unet, 1, rank=2)
    try:
        _randomise(lora)
        a = save_adapter(tmp_path / "a", 0, lora).read_bytes()
        b = save_adapter(tmp_path / "b", 0, lora).read_bytes()
    finally:
        lora.detach()
    assert a == b


def test_truncated_file_is_a_clear_error(tiny, tmp_path):
    lora = MultiLoRA(tiny.unet, 1, rank=2)
    try:
        path = save_adapter(tmp_path, 0, lora)
    finally:
        lora.detach()
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_adapter(path)


def _identity(k: int, n_images: int = 2):
    from gandiff.diffusion.dreambooth import IdentityData

    g = torch.Generator().manual_seed(100 + k)
    mean = torch.randn(n_images, 2, 4, 16, 16, generator=g)
    return IdentityData(
        f"id_{k:06d}", 1000 + k, mean, torch.full_like(mean, 0.1), "a photo of sks person", "person"
    )


def _train(tiny, identities, steps: int, max_grad_norm: float):
    """Run the DreamBooth module's own step (loss, per-adapter clipping, AdamW) by hand, without a Trainer."""
    from diffusers import DDPMScheduler

    from gandiff.diffusion.dreambooth import ClassData, DreamBoothModule, GroupNetworks, StepBatches
    from gandiff.diffusion.schema import DreamBoothConfig

    sched = DDPMScheduler.from_config(tiny.scheduler_config)
    g = torch.Generator().manual_seed(7)
    cmean = torch.randn(3, 2, 4, 16, 16, generator=g)
    classes = {"person": ClassData("a photo of a person", cmean, torch.full_like(cmean, 0.1))}
    prompts = ["a photo of sks person", "a photo of a person"]
    text = dict(zip(prompts, tiny.encode_text(prompts)))
    data = StepBatches(
        identities,
        classes,
        steps,
        flip=0.5,
        prior_weight=0.7,
        scaling_factor=0.18215,
        num_train_timesteps=1000,
        text=text,
    )
    lora = MultiLoRA(tiny.unet, len(identities), rank=4)
    try:
        for i, d in enumerate(identities):
            lora.reset_adapter(i, d.seed)
        module = DreamBoothModule(
            GroupNetworks(tiny.unet, len(identities), lora.parameters(), lora),
            sched.alphas_cumprod,
            "epsilon",
            DreamBoothConfig(learning_rate=1e-3, steps=steps, max_grad_norm=max_grad_norm),
        )
        opt = module.configure_optimizers()["optimizer"]
        grads = []
        for step in range(steps):
            opt.zero_grad()
            module.training_step(data[step], step).backward()
            grads.append([p.grad.clone() for p in lora.parameters()])
            module.configure_gradient_clipping(opt)
            opt.step()
        state = [lora.adapter_state_dict(i) for i in range(len(identities))]
        return state, grads, module.loss_curve()
    finally:
        lora.detach()


def test_batching_does_not_mix_identities(tiny):
    """Each adapter after training in a group of 3 == the adapter trained alone on the same samples.

    Gradients are compared first (a mean over the batch instead of the per-identity sum would scale
    them by 1/K); after two AdamW steps with a clipping threshold low enough to act (a global-norm clip
    would couple identities), the adapters themselves.
    """
    ids = [_identity(k) for k in range(3)]
    together, grads, losses = _train(tiny, ids, steps=2, max_grad_norm=1e-3)
    assert losses.shape == (2, 3)
    for k, d in enumerate(ids):
        alone, alone_grads, alone_losses = _train(tiny, [d], steps=2, max_grad_norm=1e-3)
        assert abs(losses[0, k] - alone_losses[0, 0]) < 1e-5
        # Batched kernels round differently, so compare norms of differences, relative to the values.
        for gt, ga in zip(grads[0], alone_grads[0]):  # step 1, from the same start: B's gradients (A's are 0)
            assert (gt[k] - ga[0]).norm() <= 1e-4 * ga[0].norm() + 1e-12
        for gt, ga in zip(grads[1], alone_grads[1]):  # step 2: Adam's first step amplifies float noise a bit
            assert (gt[k] - ga[0]).norm() <= 1e-3 * ga[0].norm()
        for name, v in alone[0].items():  # after two AdamW steps: the float noise of step 2's gradients, amplified
            assert (together[k][name] - v).norm() <= 1e-3 * v.norm(), name
    # And the identities did learn different things.
    name = next(n for n in together[0] if "lora_B" in n)
    assert not torch.allclose(together[0][name], together[1][name])
