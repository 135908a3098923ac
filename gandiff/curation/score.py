"""Scoring: measure every generated face once, so that selection never needs a model again.

For each generated image: detection (how many faces, the chosen face's score, size and five landmarks),
the ArcFace-aligned 112x112 crop, its embedding, and from those

- ``anchor_sim``: cosine similarity to the identity's anchor (the GAN face DreamBooth learned): did the
  diffusion model keep the identity? (GANDiffFace, Melzi et al. 2023, filters on this.)
- ``centroid_sim``: to the *leave-one-out* centroid of the identity's other generated faces: is this image
  consistent with the rest of its class? Leaving the image out matters: with a few images per identity an
  image would otherwise be compared mostly with itself.
- ``other_sim`` / ``other_id``: the highest similarity to any *other* identity's anchor, and which one:
  did the image drift into another identity (a label-noise source for training)? Anchors, not other
  centroids, so that each shard (a set of identities) can score on its own.
- ``yaw``, ``pitch``, ``roll``: head pose from the five landmarks (see ``pose_from_landmarks``).
- ``sharpness``: variance of the Laplacian of the grey aligned crop (Pech-Pacheco et al. 2000).
- ``quality``: ``det_score * tanh(sharpness / sharpness_ref)``. An honest heuristic proxy — detector
  confidence times focus — not a learned face-image-quality model (SER-FIQ, CR-FIQA, SDD-FIQA need
  their own networks, and SFace returns normalised embeddings, so embedding-norm quality as in
  AdaFace/MagFace is not available). It is calibrated for nothing; use it to rank and to cut the worst.
- attributes (gender, age, race where the classifier gives it) of the aligned face.

When an image has several faces the largest is scored (the subject; a prompt asks for one person) and
``n_faces`` records how many there were, so selection can reject the image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SHARPNESS_REF = 100.0  # Laplacian variance of a 112x112 crop that counts as "in focus" (tanh(1) = 0.76)

# --------------------------------------------------------------------------------------------- pose

# A mean face in the ArcFace template frame (pixels of the 112x112 crop; x right, y down, z towards the
# camera), LANDMARK_NAMES order. x, y are the template; depths are typical anthropometric ratios to the
# inter-ocular distance (IOD = 35.2 px): nose tip 0.5 IOD in front of the eye plane, mouth corners
# 0.15 IOD (Farkas, "Anthropometry of the head and face", 1994, rounded).
_IOD = 35.24
FACE_3D = np.array([
    [38.2946, 51.6963, 0.0],
    [73.5318, 51.5014, 0.0],
    [56.0252, 71.7366, 0.50 * _IOD],
    [41.5493, 92.3655, 0.15 * _IOD],
    [70.7299, 92.2041, 0.15 * _IOD],
], dtype=np.float64)
FACE_3D = FACE_3D - FACE_3D.mean(0)
# The template's own eye line is 0.32 degrees off horizontal: subtracted so that the template reads roll 0.
_TEMPLATE_ROLL = math.degrees(math.atan2(FACE_3D[1, 1] - FACE_3D[0, 1], FACE_3D[1, 0] - FACE_3D[0, 0]))


def rotation(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations: pitch about x, then yaw about y (degrees; conventions as in pose_from_landmarks)."""
    y, p = np.radians(yaw), np.radians(pitch)
    cy, sy, cp, sp = np.cos(y), np.sin(y), np.cos(p), np.sin(p)
    one, zero = np.ones_like(cy), np.zeros_like(cy)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    return ry @ rx


def project_face(yaw: float, pitch: float, roll: float, scale: float = 1.0,
                 center: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """(5, 2) image landmarks of ``FACE_3D`` at a pose (scaled orthographic camera): the forward model."""
    pts = FACE_3D @ rotation(np.float64(yaw), np.float64(pitch)).T  # (5, 3)
    r = math.radians(roll)  # FACE_3D's eye line already carries _TEMPLATE_ROLL
    rot2 = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return scale * pts[:, :2] @ rot2.T + np.asarray(center, dtype=np.float64)


_GRID = np.stack(np.meshgrid(np.arange(-90.0, 90.1, 2.0), np.arange(-60.0, 60.1, 2.0), indexing="ij"), -1).reshape(-1, 2)


def _best_pose(pts: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """The (yaw, pitch) in ``grid`` whose projection (after the best scale) fits ``pts`` (5, 2, centred)."""
    proj = np.einsum("pk,gjk->gpj", FACE_3D, rotation(grid[:, 0], grid[:, 1]))[..., :2]  # (G, 5, 2)
    proj = proj - proj.mean(1, keepdims=True)
    s = (proj * pts).sum((1, 2)) / np.maximum((proj * proj).sum((1, 2)), 1e-12)
    err = ((pts[None] - s[:, None, None] * proj) ** 2).sum((1, 2))
    g = grid[int(err.argmin())]
    return float(g[0]), float(g[1])


def pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the five landmarks (image pixels, LANDMARK_NAMES order).

    roll: the angle of the eye line (positive: the face is rotated clockwise in the image, the eye on the
    image's right is lower). yaw and pitch: fit of a mean 3D face (``FACE_3D``) under a scaled
    orthographic camera to the roll-corrected landmarks, by search over a 2 degree grid refined to
    0.25 degree. Positive yaw: the face turns towards the image's right (nose right of the eye midpoint);
    positive pitch: the face looks up. Five points and a mean face make this coarse — a few degrees near
    frontal, worse beyond ~60 degrees of yaw — which is enough to describe and filter a dataset's pose
    spread, not to measure a head pose.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    d = lm[1] - lm[0]
    roll = math.degrees(math.atan2(d[1], d[0])) - _TEMPLATE_ROLL
    r = -math.radians(roll + _TEMPLATE_ROLL)
    pts = (lm - lm.mean(0)) @ np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]).T
    yaw, pitch = _best_pose(pts, _GRID)
    fine = np.stack(np.meshgrid(np.arange(yaw - 2, yaw + 2.01, 0.25), np.arange(pitch - 2, pitch + 2.01, 0.25),
                                indexing="ij"), -1).reshape(-1, 2)
    yaw, pitch = _best_pose(pts, fine)
    return yaw, pitch, roll


# --------------------------------------------------------------------------------------------- quality


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey (H, W, 3) uint8 RGB crop: low for blur and flat noise-free images."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_quality(det_score: float, sharp: float, sharpness_ref: float = SHARPNESS_REF) -> float:
    """Heuristic quality in [0, 1]: detector confidence x focus (see the module docstring for its limits)."""
    return float(det_score) * math.tanh(max(sharp, 0.0) / sharpness_ref)


# --------------------------------------------------------------------------------------------- faces


@dataclass
class FaceMeasurement:
    n_faces: int
    det_score: float | None = None
    face_size: float | None = None  # min(box width, height), pixels of the generated image
    eye_distance: float | None = None
    box: list[float] | None = None
    landmarks: list[float] | None = None  # 10 values, x0 y0 x1 y1 ...
    crop: np.ndarray | None = None  # (112, 112, 3) uint8 RGB, ArcFace template
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    sharpness: float | None = None
    quality: float | None = None


def measure_faces(images: Sequence[np.ndarray], detector: Any, batch_size: int = 32) -> list[FaceMeasurement]:
    """Detect (in batches through ``detector.detect_batch`` when it has one), keep the largest face, align."""
    from gandiff.face.align import align_face

    dets: list[list[Any]] = []
    if hasattr(detector, "detect_batch") and batch_size > 1:
        for s in range(0, len(images), batch_size):
            dets += detector.detect_batch(list(images[s:s + batch_size]))
    else:
        dets = [detector.detect(im) for im in images]
    out = []
    for img, faces in zip(images, dets):
        if not faces:
            out.append(FaceMeasurement(n_faces=0))
            continue
        d = max(faces, key=lambda f: f.area)
        crop = align_face(img, d.landmarks, 112)
        yaw, pitch, roll = pose_from_landmarks(d.landmarks)
        sharp = sharpness(crop)
        out.append(FaceMeasurement(
            n_faces=len(faces), det_score=round(float(d.score), 4), face_size=round(min(d.width, d.height), 2),
            eye_distance=round(d.eye_distance, 2), box=[round(float(v), 2) for v in d.box],
            landmarks=[round(float(v), 2) for v in d.landmarks.reshape(-1)], crop=crop,
            yaw=round(yaw, 2), pitch=round(pitch, 2), roll=round(roll, 2), sharpness=round(sharp, 2),
            quality=round(face_quality(d.score, sharp), 4)))
    return out


def embed_crops(crops: np.ndarray, embedder: Any, batch_size: int = 32) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB -> (N, D) float32 L2-normalised, ``batch_size`` crops per model call."""
    if len(crops) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    out = [np.asarray(embedder.embed(crops[s:s + batch_size]), dtype=np.float32) for s in range(0, len(crops), batch_size)]
    return np.concatenate(out)


def identity_similarities(emb: np.ndarray, has_face: np.ndarray, own_anchor: np.ndarray,
                          other_anchors: np.ndarray, other_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Per image of one identity: anchor, leave-one-out centroid and nearest-other-identity similarities.

    ``emb`` (n, D) L2-normalised (rows without a face are ignored), ``own_anchor`` (D,),
    ``other_anchors`` (C-1, D). Values are None for images without a face; ``centroid_sim`` is None when
    the identity has no other face to compare with.
    """
    n = len(has_face)
    out: dict[str, list[Any]] = {"anchor_sim": [None] * n, "centroid_sim": [None] * n,
                                 "other_sim": [None] * n, "other_id": [""] * n}
    idx = np.flatnonzero(has_face)
    if idx.size == 0:
        return out
    e = emb[idx]  # (m, D)
    anchor = e @ own_anchor  # (m,)
    total = e.sum(0)  # (D,)
    if len(other_anchors):
        others = e @ other_anchors.T  # (m, C-1)
        j = others.argmax(1)
    for k, i in enumerate(idx):
        out["anchor_sim"][i] = round(float(anchor[k]), 4)
        if idx.size > 1:
            c = total - e[k]  # leave-one-out centroid of the identity's other faces
            out["centroid_sim"][i] = round(float(e[k] @ c / max(np.linalg.norm(c), 1e-12)), 4)
        if len(other_anchors):
            out["other_sim"][i] = round(float(others[k, j[k]]), 4)
            out["other_id"][i] = str(other_ids[j[k]])
    return out
