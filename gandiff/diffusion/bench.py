"""Throughput of multi-identity DreamBooth and generation against one-identity-at-a-time references.

Measured, not asserted: ``scripts/bench/dreambooth.py`` and ``scripts/bench/generate.py`` print these
tables on the tiny model; ``scripts/gpu_check.py`` calls the same functions at SD 1.5 size with random
weights (``build_sd15_random_components``) on a GPU. Both references run in the same process, on the
same modules, so the ratios compare like with like.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gandiff.diffusion.components import Components, build_sd15_random_components


def _sync(comps: Components) -> None:
    if comps.device.type == "cuda":
        torch.cuda.synchronize(comps.device)


def components_for(size: str, device: str, dtype: str) -> Components:
    """``tiny`` or ``sd15`` modules with random weights (no download)."""
    return build_sd15_random_components(device=device, dtype=dtype, size=size)


def bench_dreambooth(
    comps: Components,
    ks: Sequence[int] = (1, 4, 8),
    steps: int = 10,
    warmup: int = 2,
    resolution: int = 64,
    rank: int = 4,
    prior_weight: float = 1.0,
    gradient_checkpointing: bool = False,
    planned_steps: int = 800,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """Seconds per DreamBooth step and per identity (for ``planned_steps`` steps) at K identities per batch.

    K = 1 is the one-identity-at-a-time reference (diffusers' script: batch of one instance and one class
    image). Each step is the module's own: loss, backward, per-adapter clipping, AdamW; bf16/fp16 runs
    under autocast with fp32 adapters, as the Lightning Trainer's mixed precision does. With ``rounds`` > 1
    the K values run interleaved (K1, K2, ..., K1, K2, ...); each row's ``s_per_step_rounds`` lists the
    rounds and its figures are their medians.
    """
    import statistics

    from diffusers import DDPMScheduler

    from gandiff.diffusion.dreambooth import ClassData, DreamBoothModule, GroupNetworks, IdentityData, StepBatches
    from gandiff.diffusion.schema import DreamBoothConfig
    from gandiff.diffusion.multi_lora import MultiLoRA

    f = comps.vae_scale_factor
    shape = (4, resolution // f, resolution // f)
    sched = DDPMScheduler.from_config(comps.scheduler_config)
    prompts = ["a photo of sks person", "a photo of a person"]
    text = dict(zip(prompts, comps.encode_text(prompts).float().cpu()))
    g = torch.Generator().manual_seed(0)
    classes = {
        "person": ClassData(
            prompts[1], torch.randn(8, 2, *shape, generator=g), torch.full((8, 2, *shape), 0.1)
        )
    }
    autocast = comps.device.type == "cuda" and comps.dtype != torch.float32

    def one_run(k: int) -> tuple[float, int]:
        """(seconds per timed step, batch size) of a fresh K-identity LoRA, after ``warmup`` steps."""
        ids = [
            IdentityData(
                f"id_{i:06d}",
                i,
                torch.randn(4, 2, *shape, generator=g),
                torch.full((4, 2, *shape), 0.1),
                prompts[0],
                "person",
            )
            for i in range(k)
        ]
        data = StepBatches(ids, classes, warmup + steps, 0.5, prior_weight, 0.18215, 1000, text)
        lora = MultiLoRA(comps.unet, k, rank)
        try:
            module = DreamBoothModule(
                GroupNetworks(comps.unet, k, lora.parameters(), lora),
                sched.alphas_cumprod,
                "epsilon",
                DreamBoothConfig(steps=warmup + steps, gradient_checkpointing=gradient_checkpointing),
            )
            module.to(comps.device)
            opt = module.configure_optimizers()["optimizer"]
            comps.unet.train()
            for step in range(warmup + steps):
                if step == warmup:
                    _sync(comps)
                    t0 = time.perf_counter()
                batch = {n: v.to(comps.device, non_blocking=True) for n, v in data[step].items()}
                with torch.autocast(comps.device.type, dtype=comps.dtype, enabled=autocast):
                    loss = module.training_step(batch, step)
                loss.backward()
                module.configure_gradient_clipping(opt)
                opt.step()
                opt.zero_grad(set_to_none=True)
            _sync(comps)
            per_step = (time.perf_counter() - t0) / steps
        finally:
            comps.unet.eval()
            if gradient_checkpointing:
                comps.unet.disable_gradient_checkpointing()
            lora.detach()
        return per_step, len(data[0]["latents"])

    per_round: dict[int, list[float]] = {k: [] for k in ks}
    batches: dict[int, int] = {}
    for _ in range(max(1, rounds)):
        for k in ks:
            t, batches[k] = one_run(k)
            per_round[k].append(t)
    rows = []
    for k in ks:
        per_step = statistics.median(per_round[k])
        rows.append(
            {
                "K": k,
                "batch": batches[k],
                "s_per_step": per_step,
                f"s_per_identity_{planned_steps}_steps": per_step * planned_steps / k,
                "s_per_step_rounds": per_round[k],
            }
        )
    base = rows[0]["s_per_step"] / ks[0]
    for r in rows:
        r["speedup_vs_one_at_a_time"] = base / (r["s_per_step"] / r["K"])
    return rows


def bench_generate(
    comps: Components,
    identities: int = 4,
    images_per_identity: int = 3,
    batch_size: int = 12,
    steps: int = 10,
    guidance: float = 7.5,
    resolution: int = 64,
    scheduler: str = "ddim",
    rank: int = 4,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """Images/s: mixed-identity batches through the multi-LoRA vs one identity at a time.

    The reference is the plain diffusers loop: per identity ``load_lora_weights``, render its images in
    batches of at most ``batch_size`` (it cannot fill a batch with other identities), ``unload_lora_weights``.
    Each runs once untimed, then ``rounds`` times interleaved (reference, mixed, reference, mixed ...);
    ``seconds_rounds`` lists the rounds, the other figures are their medians.
    """
    import statistics

    from gandiff.diffusion.generate import RenderSpec, attach_adapters, render_batch
    from gandiff.diffusion.multi_lora import MultiLoRA, save_adapter

    with tempfile.TemporaryDirectory() as tmp:
        lora = MultiLoRA(comps.unet, identities, rank)
        try:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in lora.parameters():
                    p.copy_(torch.randn(p.shape, generator=g).to(p.device) * 0.01)
            files = [str(save_adapter(Path(tmp) / f"id{k}", k, lora)) for k in range(identities)]
        finally:
            lora.detach()
        specs = [
            RenderSpec("a photo of sks person, smiling", "blurry", 1000 * k + i, k)
            for k in range(identities)
            for i in range(images_per_identity)
        ]
        kw = dict(scheduler=scheduler, steps=steps, guidance=guidance, resolution=resolution)
        n = len(specs)

        def mixed_run() -> None:
            unet_lora, _ = attach_adapters(comps, files)
            try:
                for i in range(0, n, batch_size):
                    render_batch(comps, specs[i : i + batch_size], **kw, unet_lora=unet_lora)
            finally:
                unet_lora.detach()

        pipe = comps.pipeline()

        def reference_run() -> None:
            for k in range(identities):
                pipe.load_lora_weights(str(Path(files[k]).parent))
                mine = [RenderSpec(s.prompt, s.negative, s.seed, -1) for s in specs if s.adapter == k]
                for i in range(0, len(mine), batch_size):
                    render_batch(comps, mine[i : i + batch_size], **kw)
                pipe.unload_lora_weights()

        # Each run once untimed first: kernels are selected / compiled per batch shape on first use.
        reference_run()
        mixed_run()
        alone_rounds, mixed_rounds = [], []
        for _ in range(max(1, rounds)):
            for fn, out in ((reference_run, alone_rounds), (mixed_run, mixed_rounds)):
                _sync(comps)
                t0 = time.perf_counter()
                fn()
                _sync(comps)
                out.append(time.perf_counter() - t0)
        alone, mixed = statistics.median(alone_rounds), statistics.median(mixed_rounds)
    return [
        {
            "method": "one identity at a time (diffusers load_lora_weights)",
            "images": n,
            "seconds": alone,
            "images_per_s": n / alone,
            "speedup": 1.0,
            "seconds_rounds": alone_rounds,
        },
        {
            "method": f"mixed-identity batches of {batch_size} (multi-LoRA)",
            "images": n,
            "seconds": mixed,
            "images_per_s": n / mixed,
            "speedup": alone / mixed,
            "seconds_rounds": mixed_rounds,
        },
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of bench rows (floats to 3 significant digits)."""
    cols = [c for c in rows[0] if not c.endswith("_rounds")]
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
