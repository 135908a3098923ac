"""A diffusion backend that needs no per-identity training: the shape of an identity-conditioned generator.

An Arc2Face-like model renders any identity from its embedding; here the "embedding" is the identity's
anchor image shrunk to ``thumb`` x ``thumb`` and the "model" upsamples it to the sampling resolution, adds
noise drawn from the image's seed and shifts the brightness by the prompt. ``train_group`` only computes
each identity's conditioning, which ``save_adapter`` writes as a small ``.npy`` file. One class and one
YAML file (``tests/diffusion/conf/dreambooth/anchor.yaml``); no stage file knows it exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gandiff.artifacts import atomic_write_bytes
from gandiff.diffusion.backend import Adapter, RenderSpec, Sampler, SavedAdapter, TrainIdentity


@dataclasses.dataclass
class AnchorGroup:
    losses: np.ndarray  # (0, K): nothing is trained
    codes: list[np.ndarray]  # per identity (thumb, thumb, 3) float32 in [0, 255]


class AnchorBackend:
    def __init__(self, settings: Any, seed: int, cache_dir: Path, face_detector: Callable[[], Any] | None = None,
                 thumb: int = 8, noise: float = 4.0):
        self.settings, self.seed, self.thumb, self.noise = settings, seed, thumb, noise
        self.dtype = ""
        self._codes: list[np.ndarray] | None = None

    def load(self, dtype: str, device: str) -> None:
        self.dtype = "float32"  # numpy on the CPU, whatever was asked

    def training_group_size(self) -> int:
        return self.settings.identities_per_batch

    @contextlib.contextmanager
    def train_group(self, identities: Sequence[TrainIdentity], work_dir: Path) -> Iterator[AnchorGroup]:
        codes = []
        for ident in identities:
            with Image.open(ident.images[0]) as im:  # the anchor
                small = im.convert("RGB").resize((self.thumb, self.thumb), Image.Resampling.BOX)
            codes.append(np.asarray(small, np.float32))
        yield AnchorGroup(np.zeros((0, len(identities)), np.float32), codes)

    def save_adapter(self, trained: AnchorGroup, index: int, folder: Path) -> SavedAdapter:
        buf = io.BytesIO()
        np.save(buf, trained.codes[index])
        weights = atomic_write_bytes(folder / "anchor.npy", buf.getvalue())
        return SavedAdapter(weights, (), "anchor", "", 0, 0)

    def render_group_size(self, modes: set[str], requested: int) -> int:
        return requested

    @contextlib.contextmanager
    def adapters(self, group: Sequence[Adapter]) -> Iterator[None]:
        self._codes = [np.load(a.path) for a in group]
        try:
            yield
        finally:
            self._codes = None

    def render(self, specs: Sequence[RenderSpec], sampler: Sampler) -> list[Any]:
        out = []
        for s in specs:
            code = self._codes[s.adapter] if self._codes is not None and s.adapter >= 0 else np.full(
                (self.thumb, self.thumb, 3), 128, np.float32)
            up = sampler.resolution // self.thumb
            img = np.kron(code, np.ones((up, up, 1), np.float32))  # (R, R, 3)
            img += np.random.RandomState(s.seed).randn(*img.shape).astype(np.float32) * self.noise
            img += zlib.crc32(s.prompt.encode()) % 9 - 4.0  # the prompt moves the image a little
            out.append(Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)))
        return out
