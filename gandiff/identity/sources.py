"""The identity-source protocol: seeds -> latents -> images, and a latent space to edit in.

Every generator the identity stage can use answers the same four questions, so that sampling, demographic
targeting, distinctiveness and edits are written once: ``sample(seeds) -> z`` ``(N, z_dim)`` float32 (NumPy's
``RandomState(seed)``, so seed 42 is NVlabs' seed 42), ``to_w(z, truncation) -> w`` ``(N, w_dim)``,
``render(w) -> (N, H, W, 3)`` uint8 RGB, and ``editable``. Arrays cross the protocol as NumPy; each source
keeps its device and batching inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class IdentitySource(Protocol):
    name: str
    z_dim: int
    w_dim: int
    resolution: int
    editable: bool

    def sample(self, seeds: Sequence[int]) -> np.ndarray:  # (N, z_dim) float32
        ...

    def to_w(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:  # (N, w_dim) float32
        ...

    def render(self, w: np.ndarray) -> np.ndarray:  # (N, H, W, 3) uint8 RGB
        ...


def gaussian_latents(seeds: Sequence[int], dim: int) -> np.ndarray:
    """``(N, dim)`` float32 standard-normal latents, one ``RandomState(seed)`` per seed (NVlabs' convention).

    NVlabs draws ``RandomState(seed).randn(1, z_dim)`` in float64 and the mapping network casts to float32;
    casting here gives the same float32 values.
    """
    out = np.empty((len(seeds), dim), dtype=np.float32)
    for i, s in enumerate(seeds):
        s = int(s)
        if not 0 <= s < 2**32:
            raise ValueError(f"seed {s}: must be in [0, 2**32)")
        out[i] = np.random.RandomState(s).randn(dim)
    return out


def to_uint8_images(x) -> np.ndarray:
    """Generator output ``(N, 3, H, W)`` in [-1, 1] (torch) -> ``(N, H, W, 3)`` uint8.

    Same rounding as NVlabs' ``gen_images.py``: ``(x * 127.5 + 128).clamp(0, 255)`` then truncation to
    uint8, so pixel values match the official tools exactly.
    """
    import torch

    x = (x.detach().to(torch.float32).permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(x.cpu().numpy())


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; see ``gandiff.devices.torch_device``."""
    from gandiff.devices import torch_device

    return str(torch_device(device))


def batched(n: int, batch_size: int):
    """``range`` slices covering ``n`` items in batches."""
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))
