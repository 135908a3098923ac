"""StyleGAN2 / StyleGAN3 generators as identity sources: load, save, sample, render.

NVlabs network pickles are read without executing their code (``gandiff.identity.stylegan_pickle``) and
rebuilt natively from ``init_kwargs``; ``save_generator`` writes ``safetensors`` + JSON. Seeds, truncation
and uint8 rounding follow NVlabs' ``gen_images.py``, so a seed gives the official image of NVlabs' float32
path (the ``stylegan3`` repository on a CPU) bit for bit; NVIDIA's float16 path (its GPU code, and
``stylegan2-ada-pytorch`` even on a CPU) differs by about 1e-3 relative and is rendered with ``fp16_res``.

Design: docs/design.md#stylegan-sources.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.identity.sources import batched, gaussian_latents, resolve_device, to_uint8_images

log = logging.getLogger(__name__)

FORMAT = "gandiff-stylegan"
TOP_KWARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")


def _arch_module(arch: str):
    if arch == "stylegan2":
        from gandiff.identity import stylegan2 as mod
    elif arch == "stylegan3":
        from gandiff.identity import stylegan3 as mod
    else:
        raise ValueError(f"arch={arch!r}: must be 'stylegan2' or 'stylegan3'")
    return mod


def normalize_init_kwargs(arch: str, kwargs: dict[str, Any], source: str = "init_kwargs") -> dict[str, Any]:
    """Check and flatten a generator's constructor arguments (stylegan2-ada-pytorch nests ``synthesis_kwargs``)."""
    mod = _arch_module(arch)
    kwargs = dict(kwargs)
    kwargs.pop("class_name", None)
    nested = kwargs.pop("synthesis_kwargs", None) or {}
    kwargs.update(nested)
    for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if k not in kwargs:
            raise ValueError(f"{source}: missing {k!r} (has {sorted(kwargs)})")
    unknown = [k for k in kwargs if k not in TOP_KWARGS and k not in mod.SYNTHESIS_KWARGS]
    if unknown:
        raise ValueError(f"{source}: unknown {arch} generator argument(s) {unknown}; known: "
                         f"{', '.join(TOP_KWARGS + mod.SYNTHESIS_KWARGS)}")
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    unknown = [k for k in mapping if k not in mod.MAPPING_KWARGS]
    if unknown:
        raise ValueError(f"{source}: unknown mapping_kwargs {unknown}; known: {', '.join(mod.MAPPING_KWARGS)}")
    kwargs["mapping_kwargs"] = mapping
    return kwargs


def build_generator(arch: str, init_kwargs: dict[str, Any], source: str = "init_kwargs"):
    """A randomly initialised native generator; ``.arch`` and ``.init_kwargs`` record how to rebuild it."""
    kwargs = normalize_init_kwargs(arch, init_kwargs, source)
    G = _arch_module(arch).Generator(**kwargs)
    G.init_kwargs = kwargs
    return G.eval().requires_grad_(False)


def generator_from_nvlabs(record, source: str = "G_ema"):
    """Native generator from an NVlabs ``PersistentObject`` (the unpickled ``G_ema``), weights loaded strictly."""
    import torch

    from gandiff.identity.stylegan_pickle import PersistentObject

    if not isinstance(record, PersistentObject) or record.class_name != "Generator":
        raise ValueError(f"{source}: expected an NVlabs Generator record, found "
                         f"{getattr(record, 'class_name', type(record).__name__)}")
    synth = record.submodule("synthesis").state
    if "layer_names" in synth:
        arch = "stylegan3"
    elif "block_resolutions" in synth:
        arch = "stylegan2"
    else:
        raise ValueError(f"{source}: synthesis network is neither StyleGAN2 (block_resolutions) nor StyleGAN3 "
                         "(layer_names)")
    G = build_generator(arch, record.init_kwargs, source=f"{source}.init_kwargs")
    state = record.tensors()
    ours = G.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise ValueError(f"{source}: parameters do not match a {arch} generator built from its init_kwargs: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(ours[k].shape):
            raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(ours[k].shape)}")
    G.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return G


def _pair(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / "generator.safetensors", path / "generator.json"
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def save_generator(G, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` + ``<path>.json`` (or ``generator.*`` inside a folder), atomically."""
    from safetensors.torch import save_file

    from gandiff.artifacts import atomic_path, atomic_write_json

    weights, config = _pair(Path(path))
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "arch": G.arch})
    atomic_write_json(config, {"format": FORMAT, "arch": G.arch, "init_kwargs": G.init_kwargs})
    return weights, config


def load_generator(path: str | os.PathLike):
    """A native generator from an NVlabs ``.pkl`` (restricted unpickling) or from safetensors + JSON."""
    path = Path(path)
    if path.suffix == ".pkl":
        from gandiff.identity.stylegan_pickle import load_nvlabs_pickle

        data = load_nvlabs_pickle(path)
        if "G_ema" not in data:
            raise ValueError(f"{path}: no 'G_ema' in the pickle (keys: {sorted(map(str, data))})")
        return generator_from_nvlabs(data["G_ema"], source=f"{path}:G_ema")
    from safetensors.torch import load_file

    weights, config = _pair(path)
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (a StyleGAN checkpoint is an NVlabs .pkl, or "
                                    "<name>.safetensors with <name>.json beside it)")
    meta = json.loads(config.read_text())
    if meta.get("format") != FORMAT or "arch" not in meta or "init_kwargs" not in meta:
        raise ValueError(f"{config}: expected {{'format': '{FORMAT}', 'arch', 'init_kwargs'}}, found keys {sorted(meta)}")
    G = build_generator(meta["arch"], meta["init_kwargs"], source=str(config))
    state = load_file(str(weights))
    missing, unexpected = G.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: does not match {config}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return G


class StyleGANSource:
    """Identity source over a native StyleGAN2/3 generator.

    ``truncation_cutoff``: None truncates every layer; N truncates the first N of ``num_ws`` layers, and
    the edit space becomes W+ (``num_ws * w_dim`` values per identity). ``noise_mode`` (StyleGAN2 only):
    ``const`` (the default: the same image for the same w), ``random`` (fresh noise per call, seeded by
    ``noise_seed``) or ``none``. ``class_idx`` for conditional models. ``fp16_res`` (StyleGAN2 only): 0 renders
    in float32 (NVlabs' float32 path, bit for bit); N runs the top N resolutions in float16 as NVIDIA's code
    does on a GPU and stylegan2-ada-pytorch does everywhere (its checkpoints' ``num_fp16_res``, usually 4).
    """

    name = "stylegan"
    editable = True

    def __init__(self, checkpoint: str, device: str = "cpu", noise_mode: str = "const",
                 truncation_cutoff: int | None = None, class_idx: int | None = None, batch_size: int = 8,
                 noise_seed: int = 0, fp16_res: int = 0):
        import torch

        from gandiff.identity.stylegan2 import NOISE_MODES

        if noise_mode not in NOISE_MODES:
            raise ValueError(f"identity.source.noise_mode={noise_mode!r}: must be one of {', '.join(NOISE_MODES)}")
        self.device = resolve_device(device)
        self.G = load_generator(checkpoint).to(self.device)
        if fp16_res:
            from gandiff.schema import ConfigError

            if self.G.arch != "stylegan2" or fp16_res < 0:
                raise ConfigError(f"identity.source.fp16_res={fp16_res}: float16 blocks are implemented for "
                                  f"StyleGAN2 generators, with fp16_res >= 0 ({checkpoint} is {self.G.arch})")
            res = self.G.synthesis.set_fp16_res(int(fp16_res))
            log.info("%s: resolutions %s in float16 (NVlabs' fp16 path; the checkpoint says num_fp16_res=%s)",
                     checkpoint, res, self.G.synthesis.num_fp16_res)
        self.noise_mode, self.truncation_cutoff, self.batch_size = noise_mode, truncation_cutoff, batch_size
        self.noise_seed = noise_seed
        self.z_dim, self.num_ws = self.G.z_dim, self.G.num_ws
        self.w_dim = self.G.w_dim if truncation_cutoff is None else self.G.num_ws * self.G.w_dim
        self.resolution = self.G.img_resolution
        self.arch = self.G.arch
        self.c = None
        if self.G.c_dim:
            if class_idx is None or not 0 <= class_idx < self.G.c_dim:
                raise ValueError(f"identity.source.class_idx={class_idx!r}: {checkpoint} is conditional "
                                 f"(c_dim={self.G.c_dim}): give a class index in [0, {self.G.c_dim - 1}]")
            self.c = torch.zeros([1, self.G.c_dim], device=self.device)
            self.c[0, class_idx] = 1

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        return gaussian_latents(seeds, self.z_dim)

    def to_w(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:
        import torch

        z = np.asarray(z, dtype=np.float32).reshape(-1, self.z_dim)
        out = []
        with torch.inference_mode():
            for sl in batched(len(z), 256):
                zt = torch.from_numpy(z[sl]).to(self.device)
                c = None if self.c is None else self.c.repeat(len(zt), 1)
                ws = self.G.mapping(zt, c, truncation_psi=truncation, truncation_cutoff=self.truncation_cutoff)
                out.append((ws[:, 0] if self.truncation_cutoff is None else ws.flatten(1)).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.w_dim), np.float32)

    def ws(self, w: np.ndarray):
        """Edit-space latents (N, w_dim) -> the synthesis input (N, num_ws, G.w_dim) torch tensor."""
        import torch

        wt = torch.from_numpy(np.asarray(w, dtype=np.float32)).to(self.device)
        if self.truncation_cutoff is None:
            return wt[:, None, :].repeat(1, self.num_ws, 1)
        return wt.reshape(len(wt), self.num_ws, self.G.w_dim)

    def render(self, w: np.ndarray) -> np.ndarray:
        import torch

        w = np.asarray(w, dtype=np.float32).reshape(-1, self.w_dim)
        gen = torch.Generator(device=self.device).manual_seed(self.noise_seed) if self.noise_mode == "random" else None
        out = []
        with torch.inference_mode():
            for sl in batched(len(w), self.batch_size):
                img = self.G.synthesis(self.ws(w[sl]), noise_mode=self.noise_mode, generator=gen)
                out.append(to_uint8_images(img))
        r = self.resolution
        return np.concatenate(out) if out else np.zeros((0, r, r, 3), np.uint8)


def generate_images(G, seeds: Sequence[int], truncation: float = 1.0, truncation_cutoff: int | None = None,
                    noise_mode: str = "const", c=None) -> np.ndarray:
    """``gen_images.py``-equivalent: seeds -> (N, R, R, 3) uint8 through mapping + synthesis, for checks."""
    import torch

    z = torch.from_numpy(gaussian_latents(seeds, G.z_dim))
    with torch.inference_mode():
        img = G(z, c, truncation_psi=truncation, truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)
    return to_uint8_images(img)
