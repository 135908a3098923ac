"""Config schema of the ``curation`` group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gandiff.schema import require


@dataclass
class CurationConfig:
    min_det_score: float = 0.6
    min_face_size: int = 24
    min_anchor_similarity: float = 0.3  # to the identity's own anchor (embedder scale)
    max_other_similarity: float = 0.5  # to any other identity
    min_images: int = 2  # per identity; identities with fewer are dropped
    max_images: int = 50
    balance: bool = True
    leakage_gallery: Any = None  # folder of real faces or an .npz of embeddings; None: no audit
    leakage_fmr: float = 1e-4
    drop_leaked: bool = False

    def __post_init__(self) -> None:
        require(0.0 <= self.min_det_score <= 1.0, "curation.min_det_score", self.min_det_score, "must be in [0, 1]")
        require(-1.0 <= self.min_anchor_similarity <= 1.0, "curation.min_anchor_similarity",
                self.min_anchor_similarity, "must be in [-1, 1]")
        require(-1.0 <= self.max_other_similarity <= 1.0, "curation.max_other_similarity",
                self.max_other_similarity, "must be in [-1, 1]")
        require(self.min_images >= 1, "curation.min_images", self.min_images, "must be >= 1")
        require(self.max_images >= self.min_images, "curation.max_images", self.max_images,
                f"must be >= curation.min_images ({self.min_images})")
        require(0.0 < self.leakage_fmr < 1.0, "curation.leakage_fmr", self.leakage_fmr, "must be in (0, 1)")
