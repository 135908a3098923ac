"""Config schema of the ``face`` group: the detector and embedder every stage measures faces with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from gandiff.schema import require, require_target


@dataclass
class FaceConfig:
    detector: Any = None  # {_target_: ..., model_path: ...}; see conf/face/*.yaml
    embedder: Any = None  # {_target_: ..., model_path: ..., mean/std ...}
    # An insightface model-pack folder, for configs that take both models from one pack. MISSING here (each
    # face/*.yaml sets it) so that a pack config's `???` survives the merge and is named at start.
    pack_dir: Any = MISSING
    # Cosine similarity above which two faces are called the same identity (the embedder's own scale). 0.363:
    # SFace's published cosine threshold on LFW (OpenCV-Zoo), the default embedder's (conf/face/offline.yaml).
    match_threshold: float = 0.363
    batch_size: int = 32
    # Faces whose box is smaller (shorter side, pixels of the original image) are dropped as too small to
    # measure; 0 keeps every detection.
    min_face_size: float = 0.0

    def __post_init__(self) -> None:
        require_target("face.detector", self.detector)
        require(self.min_face_size >= 0, "face.min_face_size", self.min_face_size, "must be >= 0")
        require_target("face.embedder", self.embedder)
        # A pack config (face=insightface_buffalo_l) reads both models from ${face.pack_dir}: unset, the
        # paths would start "None/" and fail only when a stage loads them.
        for part in ("detector", "embedder"):
            path = str((getattr(self, part) or {}).get("model_path", ""))
            require(not (self.pack_dir is None and path.startswith("None/")), "face.pack_dir", self.pack_dir,
                    f"face.{part}.model_path is {path!r}: set face.pack_dir to the unzipped model pack folder")
        require(-1.0 <= self.match_threshold <= 1.0, "face.match_threshold", self.match_threshold, "must be in [-1, 1]")
        require(self.batch_size >= 1, "face.batch_size", self.batch_size, "must be >= 1")


@dataclass
class AttributesConfig:
    classifier: Any = None  # {_target_: ...}; None: no attribute labels (demographic targets then fail)

    def __post_init__(self) -> None:
        require_target("attributes.classifier", self.classifier)
