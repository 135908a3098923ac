"""Unconditional diffusion models from diffusers as identity sources (DDPM / LDM CelebA-HQ and the like).

Any diffusers folder or hub id with an unconditional ``UNet2DModel``, a scheduler and optionally a VQ / KL
autoencoder (``google/ddpm-celebahq-256``, ``CompVis/ldm-celebahq-256``), read by each class's own
``from_pretrained``. The sampling loop is ours so that each seed's image does not depend on its batch; with one
seed per batch it is the pipeline's exactly. There is no editable latent: the "latent" is the seed
(``editable = False``), and variations are SDEdit re-noisings of the anchor to ``variation_strength``.

Design: docs/design.md#diffusion-identity-sources.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.identity.sources import batched, resolve_device

log = logging.getLogger(__name__)

SEED_HALF = 1 << 16  # a seed < 2**32 is two exactly representable float32 halves
UNETS = ("UNet2DModel",)
DECODERS = {"vqvae": ("VQModel",), "vae": ("VQModel", "AutoencoderKL")}
SCHEDULERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler"}
DTYPES = ("float32", "float16", "bfloat16")


def seeds_to_latents(seeds: Sequence[int]) -> np.ndarray:
    """``(N,)`` seeds in ``[0, 2**32)`` -> ``(N, 2)`` float32 ``[seed >> 16, seed & 0xFFFF]`` (exact)."""
    out = np.empty((len(seeds), 2), np.float32)
    for i, s in enumerate(seeds):
        s = int(s)
        if not 0 <= s < 2**32:
            raise ValueError(f"seed {s}: must be in [0, 2**32)")
        out[i] = (s // SEED_HALF, s % SEED_HALF)
    return out


def latents_to_seeds(w: np.ndarray) -> list[int]:
    """Inverse of ``seeds_to_latents``; refuses latents that are not two whole 16-bit halves (an edited latent)."""
    w = np.asarray(w, np.float64).reshape(-1, 2)
    if not (np.all(w == np.round(w)) and np.all(w >= 0) and np.all(w < SEED_HALF)):
        raise ValueError("diffusers source: a latent must be [seed >> 16, seed & 0xFFFF] (two whole numbers in "
                         f"[0, {SEED_HALF})); got {w[:2].tolist()}: latents of this source cannot be edited")
    return [int(hi) * SEED_HALF + int(lo) for hi, lo in w]


def load_unconditional(model: str, scheduler: str | None = None, revision: str | None = None,
                       dtype: str = "float32") -> tuple[Any, Any, Any]:
    """``(unet, decoder or None, scheduler)`` from a diffusers folder or hub id, each via its class's
    ``from_pretrained``. ``scheduler``: ``ddpm`` / ``ddim`` (built from the folder's scheduler config) or
    None for the folder's own scheduler class."""
    import diffusers
    import torch
    from diffusers import DiffusionPipeline, SchedulerMixin

    where = f"identity.source.model={model!r}"
    local = Path(model).is_dir()
    if local and not (Path(model) / "model_index.json").is_file():
        raise FileNotFoundError(f"{where}: no model_index.json in that folder: not a diffusers pipeline folder "
                                "(save one with pipeline.save_pretrained)")
    try:
        index = DiffusionPipeline.load_config(model, revision=revision, local_files_only=local)
    except OSError as e:
        raise FileNotFoundError(f"{where}: cannot read its model_index.json ({e}); give a local diffusers "
                                "folder or a hub id reachable from here") from None
    parts = {k: tuple(v) for k, v in index.items() if not k.startswith("_") and isinstance(v, (list, tuple))
             and len(v) == 2 and v[1] is not None}

    def load(name: str, allowed: Sequence[str]) -> Any:
        cls_name = parts[name][1]
        if cls_name not in allowed:
            raise ValueError(f"{where}: component {name!r} is a {cls_name}; expected {' or '.join(allowed)} "
                             f"(an unconditional pipeline such as DDPMPipeline or LDMPipeline; pipeline "
                             f"{index.get('_class_name')!r})")
        kwargs = {"torch_dtype": getattr(torch, dtype)} if dtype != "float32" else {}
        return getattr(diffusers, cls_name).from_pretrained(model, subfolder=name, revision=revision,
                                                            local_files_only=local, **kwargs)

    if "unet" not in parts:
        raise ValueError(f"{where}: model_index.json lists no 'unet' (components: {', '.join(parts) or 'none'})")
    unet = load("unet", UNETS)
    decoder = None
    for name, allowed in DECODERS.items():
        if name in parts:
            decoder = load(name, allowed)
            break
    if "scheduler" not in parts:
        raise ValueError(f"{where}: model_index.json lists no 'scheduler'")
    cls_name = SCHEDULERS[scheduler] if scheduler else parts["scheduler"][1]
    cls = getattr(diffusers, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"{where}: scheduler class {cls_name!r} is not a diffusers scheduler")
    sched = cls.from_pretrained(model, subfolder="scheduler", revision=revision, local_files_only=local)
    return unet, decoder, sched


class DiffusersSource:
    """Identity source over an unconditional diffusers model (see the module docstring).

    ``model``: local diffusers folder or hub id. ``scheduler``: ``ddim`` (deterministic given the initial
    noise, few steps), ``ddpm`` (stochastic, as trained) or null (the folder's own). ``steps``: sampling
    steps. ``eta``: DDIM's noise (0 = deterministic). ``variation_strength``: fraction of the schedule
    re-noised for a variation (SDEdit ``t0``), in (0, 1].
    """

    name = "diffusers"
    editable = False
    z_dim = w_dim = 2

    def __init__(self, model: str, scheduler: str | None = "ddim", steps: int = 50, eta: float = 0.0,
                 variation_strength: float = 0.4, revision: str | None = None, dtype: str = "float32",
                 device: str = "cpu", batch_size: int = 8, cache_size: int = 64):
        import torch

        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"identity.source.scheduler={scheduler!r}: must be one of {', '.join(SCHEDULERS)} or null")
        if int(steps) < 1:
            raise ValueError(f"identity.source.steps={steps!r}: must be >= 1")
        if not 0.0 < float(variation_strength) <= 1.0:
            raise ValueError(f"identity.source.variation_strength={variation_strength!r}: must be in (0, 1]")
        if eta < 0:
            raise ValueError(f"identity.source.eta={eta!r}: must be >= 0")
        if dtype not in DTYPES:
            raise ValueError(f"identity.source.dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
        self.device = torch.device(resolve_device(device))
        self.dtype = getattr(torch, dtype)
        unet, decoder, sched = load_unconditional(str(model), scheduler, revision, dtype)
        self.unet = unet.eval().requires_grad_(False).to(self.device)
        self.decoder = decoder.eval().requires_grad_(False).to(self.device) if decoder is not None else None
        self.scheduler_cls, self.scheduler_config = type(sched), dict(sched.config)
        self.steps, self.eta, self.variation_strength = int(steps), float(eta), float(variation_strength)
        self.batch_size, self.cache_size = int(batch_size), int(cache_size)
        size = unet.config.sample_size
        self.sample_shape = (int(unet.config.in_channels), *((size, size) if isinstance(size, int) else size))
        factor = 2 ** (len(decoder.config.block_out_channels) - 1) if decoder is not None else 1
        self.resolution = int(self.sample_shape[1]) * factor
        self._x0: OrderedDict[int, Any] = OrderedDict()  # seed -> clean sample (C, h, w), for variations
        self._warned_truncation = False

    # ------------------------------------------------------------------------------------------ protocol

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        return seeds_to_latents(seeds)

    def to_w(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:
        if truncation != 1.0 and not self._warned_truncation:
            log.warning("diffusers source: identity.truncation=%s has no meaning for a diffusion model: ignored",
                        truncation)
            self._warned_truncation = True
        return np.asarray(z, np.float32).reshape(-1, 2)

    def render(self, w: np.ndarray) -> np.ndarray:
        """``(N, 2)`` seed latents -> ``(N, resolution, resolution, 3)`` uint8: full sampling from each seed."""
        seeds = latents_to_seeds(w)
        out = [self._decode(self._generate(seeds[sl])) for sl in batched(len(seeds), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)

    def render_variations(self, w: np.ndarray, noise_seeds: Sequence[int],
                          shrink: float = 1.0) -> tuple[np.ndarray, list[dict]]:
        """SDEdit variations of the anchor ``w`` (2,): one per noise seed, re-noised to ``variation_strength
        * shrink`` of the schedule. -> ``((N, H, W, 3) uint8, one edit record per image)``."""
        import torch

        seed = latents_to_seeds(w)[0]
        x0 = self._x0.get(seed)
        if x0 is None:
            x0 = self._generate([seed])[0]
        sched = self._fresh_scheduler()
        # As diffusers' img2img pipelines: run the last int(steps * strength) steps (at least one).
        run = max(1, min(self.steps, int(self.steps * self.variation_strength * shrink)))
        begin = (self.steps - run) * sched.order
        edits = [{"direction": None, "step": 0.0, "method": "sdedit", "strength": round(run / self.steps, 4),
                  "noise_seed": int(s)} for s in noise_seeds]
        out = []
        with torch.inference_mode():
            for sl in batched(len(noise_seeds), self.batch_size):
                gens = self._generators(noise_seeds[sl])
                sched = self._fresh_scheduler()
                timesteps = sched.timesteps[begin:]
                if hasattr(sched, "set_begin_index"):
                    sched.set_begin_index(begin)
                noise = self._noise(gens)  # (B, C, h, w)
                x = sched.add_noise(x0[None].to(self.device).expand_as(noise), noise,
                                    timesteps[:1].repeat(len(noise)))
                out.append(self._decode(self._denoise(x, sched, timesteps, gens)))
        images = np.concatenate(out) if out else np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return images, edits

    # ------------------------------------------------------------------------------------------ sampling

    def _fresh_scheduler(self) -> Any:
        """A new scheduler per loop: some keep per-run state (step index, multistep history)."""
        sched = self.scheduler_cls.from_config(self.scheduler_config)
        sched.set_timesteps(self.steps)
        return sched

    def _generators(self, seeds: Sequence[int]) -> list:
        import torch

        return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def _noise(self, gens: list) -> Any:
        """Each sample's noise from its own generator, as ``randn_tensor`` draws it: ``(B, C, h, w)``."""
        import torch

        return torch.cat([torch.randn((1, *self.sample_shape), generator=g) for g in gens]).to(self.device)

    def _generate(self, seeds: Sequence[int]) -> Any:
        """Full sampling: ``(B, C, h, w)`` float32 clean samples (pixels in [-1, 1], or decoder latents)."""
        import torch

        gens = self._generators(seeds)
        sched = self._fresh_scheduler()
        with torch.inference_mode():
            x = self._noise(gens) * sched.init_noise_sigma
            x0 = self._denoise(x, sched, sched.timesteps, gens)
        for s, x in zip(seeds, x0):
            self._x0[int(s)] = x.detach().to("cpu")
            self._x0.move_to_end(int(s))
        while len(self._x0) > self.cache_size:
            self._x0.popitem(last=False)
        return x0

    def _denoise(self, x: Any, sched: Any, timesteps: Any, gens: list) -> Any:
        import torch

        extra = {"eta": self.eta} if "eta" in inspect.signature(sched.step).parameters else {}
        for t in timesteps:
            eps = self.unet(sched.scale_model_input(x, t).to(self.dtype), t).sample.to(torch.float32)  # (B, C, h, w)
            # Stochastic schedulers draw each sample's step noise from its own generator.
            x = sched.step(eps, t, x, generator=gens, **extra).prev_sample
        return x

    def _decode(self, x0: Any) -> np.ndarray:
        """Clean samples -> uint8 images, as diffusers' pipelines do: ``round(255 * clamp(x / 2 + 0.5))``."""
        import torch

        with torch.inference_mode():
            if self.decoder is not None:  # LDMPipeline: latents / scaling_factor, then decode (VQ: quantize first)
                x0 = self.decoder.decode((x0 / self.decoder.config.scaling_factor).to(self.dtype)).sample
            img = (x0.to(torch.float32) / 2 + 0.5).clamp(0, 1)
            img = (img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # (B, H, W, 3)
        return np.ascontiguousarray(img.cpu().numpy())

