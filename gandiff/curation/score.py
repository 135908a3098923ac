"""Scoring: measure every generated face once, so that selection never needs a model again.

For each generated image: detection, the ArcFace-aligned 112x112 crop, its embedding, and from those
``anchor_sim`` (kept its identity?), ``centroid_sim`` (to the leave-one-out centroid of its class),
``other_sim`` / ``other_id`` (drifted into another identity?), head pose, ``sharpness``, a heuristic
``quality`` (detector score times focus, not a learned quality model), ``coverage`` (how much of the aligned
crop the image fills; the rest is black padding) and attributes (cut from the original
image and the five landmarks). Several faces: the largest is scored and ``n_faces`` counts them.

Design: docs/design.md#scoring-generated-faces.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Pose lives in its own module; re-exported here, where callers first found it.
from gandiff.curation.pose import FACE_3D, pose_from_landmarks, poses_from_landmarks, project_face  # noqa: F401

log = logging.getLogger(__name__)

SHARPNESS_REF = 100.0  # Laplacian variance of a 112x112 crop that counts as "in focus" (tanh(1) = 0.76)

# --------------------------------------------------------------------------------------------- quality


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey (H, W, 3) uint8 RGB crop: low for blur and flat noise-free images."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def crop_coverage(landmarks: np.ndarray, height: int, width: int, size: int = 112) -> float:
    """Fraction of the ``size`` x ``size`` ArcFace crop of these landmarks that comes from inside the image.

    The crop is ``gandiff.face.align.align_face``'s (same transform, bilinear, black border), so this is the
    mean of a ones image warped alike: 1.0 for a face well inside the frame, lower when the template reaches
    past the image (a close-up that overflows 64x64: its crop is part black padding, in which a detector that
    did not see the full image may find no face).
    """
    import cv2

    from gandiff.face.align import alignment_matrix

    ones = np.ones((int(height), int(width)), dtype=np.float32)
    warped = cv2.warpAffine(ones, alignment_matrix(landmarks, size), (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return float(warped.mean())


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
    landmarks: list[float] | None = None  # 10 values, x0 y0 x1 y1 ... (rounded, for the table)
    points: np.ndarray | None = None  # (5, 2) float32 landmarks as detected, for models that cut their own chip
    crop: np.ndarray | None = None  # (112, 112, 3) uint8 RGB, ArcFace template
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    sharpness: float | None = None
    quality: float | None = None
    coverage: float | None = None  # crop_coverage: the aligned crop's fraction inside the image


def detect_all(images: Sequence[np.ndarray], detector: Any, batch_size: int = 32) -> list[list[Any]]:
    """Detections of every image: ``batch_size`` images per ``detector.detect_batch`` call (the detector may
    split them further by its own ``batch_size``), or one ``detect`` call per image when it has no batch API."""
    if not hasattr(detector, "detect_batch"):
        return [detector.detect(im) for im in images]
    dets: list[list[Any]] = []
    for s in range(0, len(images), max(1, batch_size)):
        dets += detector.detect_batch(list(images[s:s + batch_size]))
    return dets


def measure_faces(images: Sequence[np.ndarray], detector: Any, batch_size: int = 32,
                  pose_reference: np.ndarray = FACE_3D) -> list[FaceMeasurement]:
    """Detect, keep the largest face of each image, align it to the ArcFace 112x112 template and measure it.

    ``pose_reference``: the (5, 3) mean face that pose is fitted with (``gandiff.curation.pose``; the
    default is calibrated to YuNet's landmarks).
    """
    from gandiff.face.align import align_face

    dets = detect_all(images, detector, batch_size)
    chosen = [max(faces, key=lambda f: f.area) if faces else None for faces in dets]
    found = [k for k, d in enumerate(chosen) if d is not None]
    poses = poses_from_landmarks(np.stack([chosen[k].landmarks for k in found]), pose_reference) if found else None
    pose_of = {k: poses[i] for i, k in enumerate(found)}
    out = []
    for k, (img, faces, d) in enumerate(zip(images, dets, chosen)):
        if d is None:
            out.append(FaceMeasurement(n_faces=0))
            continue
        crop = align_face(img, d.landmarks, 112)
        yaw, pitch, roll = (float(v) for v in pose_of[k])
        sharp = sharpness(crop)
        out.append(FaceMeasurement(
            n_faces=len(faces), det_score=round(float(d.score), 4), face_size=round(min(d.width, d.height), 2),
            eye_distance=round(d.eye_distance, 2), box=[round(float(v), 2) for v in d.box],
            landmarks=[round(float(v), 2) for v in d.landmarks.reshape(-1)],
            points=np.asarray(d.landmarks, dtype=np.float32).reshape(5, 2), crop=crop,
            yaw=round(yaw, 2), pitch=round(pitch, 2), roll=round(roll, 2), sharpness=round(sharp, 2),
            quality=round(face_quality(d.score, sharp), 4),
            coverage=round(crop_coverage(d.landmarks, img.shape[0], img.shape[1]), 4)))
    return out


def embed_crops(crops: np.ndarray, embedder: Any, batch_size: int = 32) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB -> (N, D) float32 L2-normalised, ``batch_size`` crops per model call."""
    if len(crops) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    out = [np.asarray(embedder.embed(crops[s:s + batch_size]), dtype=np.float32) for s in range(0, len(crops), batch_size)]
    return np.concatenate(out)


def embed_faces(faces: Sequence[tuple[np.ndarray, np.ndarray]], crops: np.ndarray, embedder: Any,
                batch_size: int = 32) -> np.ndarray:
    """(N, D) embeddings of N faces given as (image, (5, 2) landmarks) pairs and as their ArcFace crops.

    Embedders with their own framing (``embed_faces``, e.g. dlib's ResNet, trained on dlib chips) cut it
    from the original image, as ``gandiff.face.analyzer`` does; every other embedder gets the 112 crops.
    """
    if not hasattr(embedder, "embed_faces"):
        return embed_crops(crops, embedder, batch_size)
    if len(faces) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    out = [np.asarray(embedder.embed_faces(faces[s:s + batch_size]), dtype=np.float32)
           for s in range(0, len(faces), batch_size)]
    return np.concatenate(out)


ATTRIBUTE_FIELDS = ("gender", "gender_prob", "age", "age_bin", "race", "race_prob")


def classify_faces(faces: Sequence[tuple[np.ndarray, np.ndarray]], classifier: Any) -> list[dict[str, Any]]:
    """Attributes of N faces given as (image (H, W, 3) uint8 RGB, landmarks (5, 2)) pairs.

    Through the classifier protocol's ``classify_many``: the documented input of the age-gender and
    FairFace models, which cut their own dlib chip from the image (``gandiff.face.attributes``). Returns one
    dict of :data:`ATTRIBUTE_FIELDS` per face (``race_prob``: the probability of ``race``); ``None`` where
    the classifier does not estimate an attribute. No classifier: empty dicts.
    """
    if classifier is None or len(faces) == 0:
        return [{} for _ in range(len(faces))]
    out = []
    for a in classifier.classify_many(list(faces)):
        d = a if isinstance(a, dict) else {k: getattr(a, k, None) for k in (*ATTRIBUTE_FIELDS, "race_probs")}
        row = {k: d.get(k) for k in ATTRIBUTE_FIELDS}
        probs = d.get("race_probs") or {}
        if row["race_prob"] is None and row["race"] in probs:
            row["race_prob"] = probs[row["race"]]
        out.append({k: round(float(v), 4) if isinstance(v, (float, np.floating)) else v for k, v in row.items()})
    return out


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
