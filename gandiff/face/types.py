"""The records the face toolkit passes around: one detection, one analysed face.

Coordinates are pixels of the image the detector was given (x to the right, y down), float32.
Landmarks follow the insightface / RetinaFace order, named as they appear in the image:
``0`` eye on the image's left (the subject's right eye), ``1`` eye on the image's right, ``2`` nose tip,
``3`` mouth corner on the image's left, ``4`` mouth corner on the image's right. The ArcFace template
(:data:`gandiff.face.align.ARCFACE_TEMPLATE`) uses the same order, so these feed alignment directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")  # as seen in the image


@dataclass
class Detection:
    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # (5, 2) float32, LANDMARK_NAMES order

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def eye_distance(self) -> float:
        """Inter-ocular distance in pixels: the usual measure of how much face resolution there is."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def scaled(self, factor: float) -> Detection:
        """The same detection in an image resized by ``factor`` (boxes and landmarks scale together)."""
        return Detection(self.box * factor, self.score, self.landmarks * factor)

    def to_dict(self) -> dict[str, Any]:
        """Plain types for manifests and JSON (rounded to 0.01 px: below any detector's precision)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


@dataclass
class FaceRecord:
    """One analysed face: where it is, its aligned crop, its embedding and its attributes."""

    detection: Detection
    aligned: np.ndarray  # (112, 112, 3) uint8 RGB, ArcFace template
    embedding: np.ndarray | None = None  # (dim,) float32, L2-normalised
    attributes: Any = None  # gandiff.face.attributes.Attributes, or None when no classifier ran
    extra: dict[str, Any] = field(default_factory=dict)
