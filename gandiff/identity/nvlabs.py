"""``identity.impl=nvlabs``: run NVlabs' own StyleGAN code from a local checkout (the fallback).

Use it to cross-check the native generators, or for a checkpoint whose architecture the native code does
not cover. It imports ``dnnlib`` and ``legacy`` from ``nvlabs_path`` (a clone of
https://github.com/NVlabs/stylegan3, NVIDIA Source Code License: non-commercial) and loads the pickle
with their ``legacy.load_network_pkl``, which EXECUTES the code stored in the pickle: use it only on
pickles you trust. Their custom CUDA ops compile on first use on a GPU (they need a CUDA toolkit) and
fall back to their reference ops elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gandiff.identity.sources import batched, gaussian_latents, resolve_device, to_uint8_images


class NVlabsStyleGANSource:
    name = "stylegan-nvlabs"
    editable = True

    def __init__(self, checkpoint: str, nvlabs_path: str, device: str = "cpu", noise_mode: str = "const",
                 truncation_cutoff: int | None = None, batch_size: int = 8):
        root = Path(nvlabs_path)
        missing = [p for p in ("dnnlib", "legacy.py", "torch_utils") if not (root / p).exists()]
        if missing:
            raise FileNotFoundError(f"identity.nvlabs_path={nvlabs_path!r}: not an NVlabs stylegan3 checkout "
                                    f"(missing {', '.join(missing)}); git clone https://github.com/NVlabs/stylegan3")
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"identity.source.checkpoint={checkpoint!r}: no such file")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        import legacy

        self.device = resolve_device(device)
        with open(checkpoint, "rb") as f:
            self.G = legacy.load_network_pkl(f)["G_ema"].eval().requires_grad_(False).to(self.device)
        self.noise_mode, self.truncation_cutoff, self.batch_size = noise_mode, truncation_cutoff, batch_size
        self.z_dim, self.num_ws = self.G.z_dim, self.G.num_ws
        self.w_dim = self.G.w_dim if truncation_cutoff is None else self.num_ws * self.G.w_dim
        self.resolution = self.G.img_resolution

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        return gaussian_latents(seeds, self.z_dim)

    def to_w(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:
        import torch

        zt = torch.from_numpy(np.asarray(z, np.float32)).to(self.device)
        c = torch.zeros([len(zt), self.G.c_dim], device=self.device)
        with torch.no_grad():
            ws = self.G.mapping(zt, c, truncation_psi=truncation, truncation_cutoff=self.truncation_cutoff)
        return (ws[:, 0] if self.truncation_cutoff is None else ws.flatten(1)).cpu().numpy().astype(np.float32)

    def render(self, w: np.ndarray) -> np.ndarray:
        import torch

        w = np.asarray(w, np.float32).reshape(-1, self.w_dim)
        out = []
        with torch.no_grad():
            for sl in batched(len(w), self.batch_size):
                wt = torch.from_numpy(w[sl]).to(self.device)
                ws = (wt[:, None].repeat(1, self.num_ws, 1) if self.truncation_cutoff is None
                      else wt.reshape(len(wt), self.num_ws, -1))
                out.append(to_uint8_images(self.G.synthesis(ws, noise_mode=self.noise_mode)))
        return np.concatenate(out)
