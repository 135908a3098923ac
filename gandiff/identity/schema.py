"""Config schema of the ``identity`` group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require, require_target


@dataclass
class IdentityConfig:
    source: Any = None  # {_target_: ...}: a GAN or other identity source
    num: int = 8  # identities to keep
    truncation: float = 1.0  # psi
    # Demographic target: "uniform" over the listed attributes, or a mapping cell -> share / count.
    target: Any = None
    max_attempts: int = 2000  # seeds drawn at most before a cell that cannot be filled is an error
    batch_size: int = 16
    min_det_score: float = 0.6
    min_face_size: int = 24
    max_similarity: float = 0.4  # to every identity already kept (embedder scale)
    variations: int = 4  # images per identity for DreamBooth
    min_variation_similarity: float = 0.3
    edits: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_target("identity.source", self.source)
        require(self.num >= 1, "identity.num", self.num, "must be >= 1")
        require(0.0 < self.truncation <= 2.0, "identity.truncation", self.truncation, "must be in (0, 2]")
        require(self.max_attempts >= self.num, "identity.max_attempts", self.max_attempts,
                f"must be >= identity.num ({self.num})")
        require(self.batch_size >= 1, "identity.batch_size", self.batch_size, "must be >= 1")
        require(0.0 <= self.min_det_score <= 1.0, "identity.min_det_score", self.min_det_score, "must be in [0, 1]")
        require(self.min_face_size >= 0, "identity.min_face_size", self.min_face_size, "must be >= 0")
        require(-1.0 <= self.max_similarity <= 1.0, "identity.max_similarity", self.max_similarity, "must be in [-1, 1]")
        require(self.variations >= 0, "identity.variations", self.variations, "must be >= 0")
        require(-1.0 <= self.min_variation_similarity <= 1.0, "identity.min_variation_similarity",
                self.min_variation_similarity, "must be in [-1, 1]")
