"""Batched text-to-image across identities: each sample of a batch through its own identity's LoRA.

The UNet (and the text encoder, when its LoRA was trained) carries the adapters of every identity of a
work group (:class:`~gandiff.diffusion.multi_lora.MultiLoRA`); a batch mixes identities freely, so it
is always full. Sampling is diffusers' own ``StableDiffusionPipeline.__call__`` (any scheduler, its
classifier-free guidance), with the prompt embeddings computed here per sample and one CPU generator
per image, so an image depends on its own seed and not on the other images of its batch (beyond
float rounding: batched kernels may sum in another order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gandiff.diffusion.backend import RenderSpec  # noqa: F401 - re-exported
from gandiff.diffusion.components import Components
from gandiff.diffusion.multi_lora import MultiLoRA

SCHEDULER_CLASSES = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh sampler (schedulers hold per-run state) on the base model's noise schedule."""
    import diffusers

    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"generation.scheduler={name!r}: must be one of {', '.join(SCHEDULER_CLASSES)}")
    return getattr(diffusers, SCHEDULER_CLASSES[name]).from_config(base_config)


@torch.no_grad()
def render_batch(
    comps: Components,
    specs: Sequence[RenderSpec],
    scheduler: str,
    steps: int,
    guidance: float,
    resolution: int,
    unet_lora: MultiLoRA | None = None,
    text_lora: MultiLoRA | None = None,
) -> list[Any]:
    """Render a mixed batch; returns PIL images in the order of ``specs``."""
    index = [s.adapter for s in specs]
    for lora in (unet_lora, text_lora):
        if lora is not None:
            lora.set_index(index)
    if any(i >= 0 for i in index) and unet_lora is None:
        raise ValueError("specs name adapter slots but no unet_lora is attached")
    try:
        cond = comps.encode_text([s.prompt for s in specs])  # (B, 77, D), through each sample's text LoRA
        uncond = comps.encode_text([s.negative for s in specs]) if guidance > 1 else None
        gens = [torch.Generator("cpu").manual_seed(int(s.seed)) for s in specs]
        pipe = comps.pipeline(make_scheduler(scheduler, comps.scheduler_config))
        out = pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=resolution,
            width=resolution,
            generator=gens,
            output_type="pil",
        )
    finally:
        for lora in (unet_lora, text_lora):
            if lora is not None:
                lora.set_index(None)
    return list(out.images)


def attach_adapters(
    comps: Components,
    files: Sequence[str],
    dtype: torch.dtype | None = None,
) -> tuple[MultiLoRA, MultiLoRA | None]:
    """Attach one slot per LoRA file (slot i = ``files[i]``) to the UNet, and to the text encoder when
    the files carry text-encoder weights. Every file must have the same rank, alpha and layers.
    Call ``detach()`` on both when done."""
    from gandiff.diffusion.multi_lora import TEXT_TARGETS, UNET_TARGETS, read_adapter

    if not files:
        raise ValueError("attach_adapters: no LoRA files given")
    parts = [read_adapter(f) for f in files]
    dt = dtype or comps.dtype
    loras: dict[str, MultiLoRA] = {}
    try:
        for part, model, targets in (
            ("unet", comps.unet, UNET_TARGETS),
            ("text_encoder", comps.text_encoder, TEXT_TARGETS),
        ):
            if part not in parts[0]:
                continue
            first = parts[0][part]
            loras[part] = MultiLoRA(model, len(files), first["rank"], first["alpha"], targets, dtype=dt)
            for i, (f, p) in enumerate(zip(files, parts)):
                if part not in p or (p[part]["rank"], p[part]["alpha"]) != (first["rank"], first["alpha"]):
                    raise ValueError(
                        f"{f}: its {part} LoRA (rank/alpha or presence) differs from {files[0]}; "
                        "adapters rendered in one batch must share rank and alpha"
                    )
                loras[part].load_adapter_state_dict(i, p[part]["state"], source=str(f))
    except Exception:
        for lora in loras.values():
            lora.detach()
        raise
    return loras["unet"], loras.get("text_encoder")
