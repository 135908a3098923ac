"""An image folder as an identity source: one identity per image (e.g. real or pre-generated faces).

``sample(seeds)`` maps seed ``k`` to the ``k``-th image of a fixed shuffle of the folder (sorted file
names shuffled by ``shuffle_seed``), so the funnel's demographic targeting and distinctiveness checks
work unchanged; the "latent" is that image's index, there is nothing to edit (``editable = False``: the
stage keeps anchors only). Images are read with ``gandiff.face.images.read_image`` (any common format,
EXIF orientation, clear errors) and resized to ``resolution`` x ``resolution`` (centre crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class ImageFolderSource:
    name = "folder"
    editable = False
    z_dim = w_dim = 1

    def __init__(self, root: str, resolution: int = 256, shuffle_seed: int = 0, device: str = "cpu"):
        from gandiff.face.images import IMAGE_SUFFIXES

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"identity.source.root={root!r}: no such folder")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise ValueError(f"identity.source.root={root!r}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        self.order = np.random.default_rng(shuffle_seed).permutation(len(self.files))
        self.resolution = int(resolution)

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        seeds = np.asarray(list(seeds), np.int64)
        if len(seeds) and seeds.max() >= len(self.files):
            raise IndexError(f"{self.root}: seed {int(seeds.max())} but only {len(self.files)} images; lower "
                             "identity.num / identity.max_attempts or add images")
        return self.order[seeds].astype(np.float32).reshape(-1, 1)

    def to_w(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:
        return np.asarray(z, np.float32).reshape(-1, 1)  # no latent space: truncation does not apply

    def render(self, w: np.ndarray) -> np.ndarray:
        import cv2

        from gandiff.face.images import read_image

        out = np.empty((len(w), self.resolution, self.resolution, 3), np.uint8)
        for i, idx in enumerate(np.asarray(w).reshape(-1)):
            im = read_image(self.files[int(round(float(idx)))])
            h, wd = im.shape[:2]
            s = min(h, wd)
            im = im[(h - s) // 2:(h - s) // 2 + s, (wd - s) // 2:(wd - s) // 2 + s]
            interp = cv2.INTER_AREA if s > self.resolution else cv2.INTER_LINEAR
            out[i] = cv2.resize(im, (self.resolution, self.resolution), interpolation=interp)
        return out

    def describe(self, w: np.ndarray) -> list[str]:
        """The file behind each latent (for manifests)."""
        return [str(self.files[int(round(float(i)))]) for i in np.asarray(w).reshape(-1)]
