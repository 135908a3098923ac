"""Config schema of the ``curation`` group: selection rules and the leakage audit.

Every key here but one is read by the ``export`` stage only (selection runs on the scores ``curate`` wrote),
so a sweep over these values never runs a model again; each setting gets its own ``export/<key>/`` folder.
The exception is ``detect_size``, which decides how ``curate`` detects faces (it is part of curate's key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require, require_range

BALANCE_ATTRIBUTES = ("gender", "age_bin", "race")


@dataclass
class CurationConfig:
    # Detector input size (square, pixels) for the generated images; None: the face config's own
    # (face.detector.input_size). Same meaning as identity.detect_size. Set it for the generation size:
    # YuNet finds faces and places landmarks best when the face spans roughly 100-250 px of its input.
    # 64x64 frame-filling faces: 160 (DCGAN seeds 0-255: 253 faces found at 160, 238 letterboxed into 640);
    # a 192 px image shrunk to 160 loses landmark precision (anchor similarity 0.86 vs 0.94 at 640).
    # Detectors without an input size (MTCNN's image pyramid) ignore it.
    detect_size: Any = None
    min_det_score: float = 0.6
    min_face_size: int = 24  # pixels (shorter side of the face box in the generated image)
    min_anchor_similarity: float = 0.3  # to the identity's own anchor (embedder scale)
    min_centroid_similarity: Any = None  # to the leave-one-out centroid of its images; None: not checked
    max_other_similarity: float = 0.5  # to any other identity's anchor
    min_quality: float = 0.0  # heuristic quality in [0, 1] (detector score x focus); 0: not checked
    # Fraction of the 112x112 aligned crop that lies inside the generated image (the rest is black padding):
    # a face that overflows the frame gives a crop a recognizer learns borders from, and that a detector
    # run on the crop alone may not find (64x64 demo runs: MTCNN missed exported crops at 0.48 and 0.58, so
    # conf/curation/demo.yaml asks 0.6). 0: not checked.
    min_coverage: float = 0.5
    max_abs_yaw: float = 90.0  # degrees; 90: not checked
    max_faces: int = 1  # images with more detected faces are rejected
    min_images: int = 2  # per identity; identities with fewer are dropped
    max_images: int = 50  # per identity; more are capped, preferring spread over prompt families
    balance: bool = True
    balance_attributes: list[str] = field(default_factory=lambda: ["gender", "race"])
    balance_tolerance: float = 0.0  # a cell may exceed its balanced count by this fraction
    leakage_gallery: Any = None  # folder of real faces or an .npz of embeddings; None: no audit
    leakage_fmr: float = 1e-4
    leakage_threshold: Any = None  # a fixed threshold (from a table for the embedder); None: from the gallery
    drop_leaked: bool = False

    def __post_init__(self) -> None:
        size_ok = isinstance(self.detect_size, int) and not isinstance(self.detect_size, bool) \
            and self.detect_size >= 32 and self.detect_size % 32 == 0
        require(self.detect_size is None or size_ok,
                "curation.detect_size", self.detect_size, "must be null or a multiple of 32 (>= 32)")
        require(0.0 <= self.min_det_score <= 1.0, "curation.min_det_score", self.min_det_score, "must be in [0, 1]")
        require(self.min_face_size >= 0, "curation.min_face_size", self.min_face_size, "must be >= 0")
        require(-1.0 <= self.min_anchor_similarity <= 1.0, "curation.min_anchor_similarity",
                self.min_anchor_similarity, "must be in [-1, 1]")
        if self.min_centroid_similarity is not None:
            require(isinstance(self.min_centroid_similarity, (int, float))
                    and -1.0 <= self.min_centroid_similarity <= 1.0, "curation.min_centroid_similarity",
                    self.min_centroid_similarity, "must be null or in [-1, 1]")
        require(-1.0 <= self.max_other_similarity <= 1.0, "curation.max_other_similarity",
                self.max_other_similarity, "must be in [-1, 1]")
        require_range("curation.min_quality", self.min_quality, 0.0, 1.0)
        require_range("curation.min_coverage", self.min_coverage, 0.0, 1.0)
        require_range("curation.max_abs_yaw", self.max_abs_yaw, 0.0, 90.0)
        require(self.max_faces >= 1, "curation.max_faces", self.max_faces, "must be >= 1")
        require(self.min_images >= 1, "curation.min_images", self.min_images, "must be >= 1")
        require(self.max_images >= self.min_images, "curation.max_images", self.max_images,
                f"must be >= curation.min_images ({self.min_images})")
        bad = [a for a in self.balance_attributes if a not in BALANCE_ATTRIBUTES]
        require(not bad, "curation.balance_attributes", list(self.balance_attributes),
                f"each must be one of {', '.join(BALANCE_ATTRIBUTES)}")
        require(self.balance_tolerance >= 0, "curation.balance_tolerance", self.balance_tolerance, "must be >= 0")
        require(0.0 < self.leakage_fmr < 1.0, "curation.leakage_fmr", self.leakage_fmr, "must be in (0, 1)")
        if self.leakage_threshold is not None:
            require(isinstance(self.leakage_threshold, (int, float)) and -1.0 <= self.leakage_threshold <= 1.0,
                    "curation.leakage_threshold", self.leakage_threshold, "must be null or in [-1, 1]")
        if self.leakage_gallery is not None:
            require(isinstance(self.leakage_gallery, str) and self.leakage_gallery != "", "curation.leakage_gallery",
                    self.leakage_gallery, "must be null, a folder of face photos or an .npz of embeddings")
