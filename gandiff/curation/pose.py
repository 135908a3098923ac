"""Head pose (yaw, pitch, roll) from the detector's five landmarks, calibrated to the detector.

A mean face of five 3D points under a scaled orthographic camera is fitted to the landmarks over a yaw /
pitch grid (batched as a few matrix products). The mean face's frontal layout is the detector's own
(:data:`YUNET_FRONTAL`, measured on YuNet's landmarks of frontal portraits): fitted against the ArcFace
template instead, YuNet's frontal faces read as looking down by about 20 degrees. Coarse (a few degrees near
frontal): enough to describe and filter a dataset's pose spread, not to measure a head pose.

Design: docs/design.md#head-pose-from-five-landmarks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Inter-ocular distance of the ArcFace 112x112 template, in its pixels: FACE_3D is expressed in that
# frame so that ``project_face(scale=1)`` draws a face the size of an aligned 112 crop.
IOD_112 = 35.24
NOSE_DEPTH, MOUTH_DEPTH = 0.50, 0.15  # IOD in front of the eye plane (see module doc)

# Frontal layout of YuNet's landmarks, LANDMARK_NAMES order, in IOD units with the eye midpoint at the
# origin, x right, y down (left-right symmetric by construction). Recomputed from the packaged portraits
# by tests/curation/test_curation_pose.py.
YUNET_FRONTAL = np.array([
    [-0.5000, 0.0000],
    [0.5000, 0.0000],
    [0.0000, 0.5542],
    [-0.4385, 0.9594],
    [0.4385, 0.9594],
], dtype=np.float64)


def normalize_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(..., 5, 2) image landmarks -> the same points with the eyes at (-0.5, 0) and (0.5, 0).

    A similarity transform fixed by the two eyes: translation to the eye midpoint, rotation of the eye
    line to horizontal, scale to IOD = 1.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    mid = (lm[..., 0, :] + lm[..., 1, :]) / 2  # (..., 2)
    d = lm[..., 1, :] - lm[..., 0, :]
    iod = np.maximum(np.hypot(d[..., 0], d[..., 1]), 1e-12)
    c, s = d[..., 0] / iod, d[..., 1] / iod  # cos, sin of the eye-line angle
    x, y = lm[..., 0] - mid[..., None, 0], lm[..., 1] - mid[..., None, 1]  # (..., 5)
    # rotate by minus the eye-line angle
    return np.stack([c[..., None] * x + s[..., None] * y, -s[..., None] * x + c[..., None] * y], -1) / iod[..., None, None]


def mirror_layout(layout: np.ndarray) -> np.ndarray:
    """The layout of the mirror-image face: x negated, left and right points swapped."""
    out = np.asarray(layout, dtype=np.float64)[..., [1, 0, 2, 4, 3], :].copy()
    out[..., 0] *= -1
    return out


def frontal_layout(landmarks: Sequence[np.ndarray]) -> np.ndarray:
    """(5, 2) mean frontal layout, in IOD units, from landmarks of frontal faces (any image coordinates).

    Each face is normalised (:func:`normalize_landmarks`), the mean is taken, and averaged with its mirror
    image so that the layout is left-right symmetric (a frontal reference must read yaw 0 and roll 0).
    Detections on the mirrored photos as well as the photos themselves also average out the detector's own
    left-right bias.
    """
    pts = normalize_landmarks(np.stack([np.asarray(lm, np.float64).reshape(5, 2) for lm in landmarks]))
    mean = pts.mean(0)
    return (mean + mirror_layout(mean)) / 2


def face_model_3d(layout: np.ndarray) -> np.ndarray:
    """(5, 3) centred mean face in ArcFace-112 pixels from a (5, 2) frontal layout in IOD units."""
    lay = np.asarray(layout, dtype=np.float64).reshape(5, 2)
    z = np.array([0.0, 0.0, NOSE_DEPTH, MOUTH_DEPTH, MOUTH_DEPTH])
    pts = np.concatenate([lay, z[:, None]], 1) * IOD_112
    return pts - pts.mean(0)


FACE_3D = face_model_3d(YUNET_FRONTAL)  # (5, 3) x right, y down, z towards the camera


def rotation(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations: pitch about x, then yaw about y (degrees; conventions as in pose_from_landmarks)."""
    y, p = np.radians(yaw), np.radians(pitch)
    cy, sy, cp, sp = np.cos(y), np.sin(y), np.cos(p), np.sin(p)
    one, zero = np.ones_like(cy), np.zeros_like(cy)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    return ry @ rx


def _eye_line_angle(points: np.ndarray) -> float:
    return math.degrees(math.atan2(points[1, 1] - points[0, 1], points[1, 0] - points[0, 0]))


def project_face(yaw: float, pitch: float, roll: float, scale: float = 1.0,
                 center: Sequence[float] = (0.0, 0.0), reference: np.ndarray = FACE_3D) -> np.ndarray:
    """(5, 2) image landmarks of ``reference`` (5, 3) at a pose (scaled orthographic camera): the forward model."""
    pts = reference @ rotation(np.float64(yaw), np.float64(pitch)).T  # (5, 3)
    r = math.radians(roll)  # the reference's own eye line (if any tilt) is carried along
    rot2 = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return scale * pts[:, :2] @ rot2.T + np.asarray(center, dtype=np.float64)


def _grid(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(yaw, pitch, indexing="ij"), -1).reshape(-1, 2)  # (G, 2) yaw, pitch


_COARSE = _grid(np.arange(-90.0, 90.1, 2.0), np.arange(-60.0, 60.1, 2.0))  # (5551, 2)
_FINE = _grid(np.arange(-2.0, 2.01, 0.25), np.arange(-2.0, 2.01, 0.25))  # (289, 2) offsets around the coarse fit


def _coefficients(grid: np.ndarray) -> np.ndarray:
    """(..., 5) weights that make a projection out of :func:`_basis` at each (yaw, pitch) of ``grid`` (..., 2).

    With ``R = Ry(yaw) Rx(pitch)`` the orthographic projection of a point (X, Y, Z) is
    ``x = cos(y) X + sin(y) sin(p) Y + sin(y) cos(p) Z`` and ``y = cos(p) Y - sin(p) Z``: linear in five
    terms, so every grid pose is a 5-vector and the fit below never builds a rotation matrix.
    """
    y, p = np.radians(grid[..., 0]), np.radians(grid[..., 1])
    cy, sy, cp, sp = np.cos(y), np.sin(y), np.cos(p), np.sin(p)
    return np.stack([cy, sy * sp, sy * cp, cp, -sp], -1)


_COARSE_COEF = _coefficients(_COARSE)  # (5551, 5)


def _basis(reference: np.ndarray) -> np.ndarray:
    """(5, 10) the five projection terms of a centred (5, 3) reference, as flattened (x0, y0, x1, y1, ...)."""
    x, y, z = reference.T  # (5,) each
    zero = np.zeros(5)
    terms = [(x, zero), (y, zero), (z, zero), (zero, y), (zero, z)]
    return np.stack([np.stack([u, v], -1).reshape(10) for u, v in terms])


def _fit(b: np.ndarray, gram: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Index of the best grid pose per face.

    ``b`` (N, 5): the landmarks' dot products with the basis; ``gram`` (5, 5): the basis' Gram matrix;
    ``coef`` (G, 5) or (N, G, 5). For a scale ``s >= 0`` the residual ``|pts - s proj|^2`` is smallest at
    ``s = <pts, proj> / |proj|^2`` and equals ``|pts|^2 - max(<pts, proj>, 0)^2 / |proj|^2``, so the fit
    maximises the second term.
    """
    if coef.ndim == 2:
        dot = b @ coef.T  # (N, G)
        norm2 = np.einsum("gk,kl,gl->g", coef, gram, coef)[None]
    else:
        dot = np.einsum("ngk,nk->ng", coef, b)
        norm2 = np.einsum("ngk,kl,ngl->ng", coef, gram, coef)
    return (np.maximum(dot, 0.0) ** 2 / np.maximum(norm2, 1e-12)).argmax(-1)


def poses_from_landmarks(landmarks: np.ndarray, reference: np.ndarray = FACE_3D) -> np.ndarray:
    """(N, 3) yaw, pitch, roll in degrees for (N, 5, 2) landmarks (image pixels, LANDMARK_NAMES order).

    roll: the angle of the eye line relative to the reference's (positive: the face is rotated clockwise
    in the image, the eye on the image's right is lower). Positive yaw: the face turns towards the image's
    right (nose right of the eye midpoint); positive pitch: the face looks up. See the module doc.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    ref = np.asarray(reference, dtype=np.float64).reshape(5, 3)
    ref = ref - ref.mean(0)
    if len(lm) == 0:
        return np.zeros((0, 3))
    ref_roll = _eye_line_angle(ref)
    d = lm[:, 1] - lm[:, 0]
    roll = np.degrees(np.arctan2(d[:, 1], d[:, 0])) - ref_roll  # (N,)
    r = -np.radians(roll + ref_roll)
    c, s = np.cos(r)[:, None], np.sin(r)[:, None]
    x, y = lm[..., 0] - lm[..., 0].mean(1, keepdims=True), lm[..., 1] - lm[..., 1].mean(1, keepdims=True)
    pts = np.stack([c * x - s * y, s * x + c * y], -1).reshape(-1, 10)  # (N, 10) roll removed, centred
    basis = _basis(ref)
    b, gram = pts @ basis.T, basis @ basis.T  # (N, 5), (5, 5)
    coarse = _COARSE[_fit(b, gram, _COARSE_COEF)]  # (N, 2)
    fine_grid = coarse[:, None, :] + _FINE[None]  # (N, 289, 2)
    fine = fine_grid[np.arange(len(pts)), _fit(b, gram, _coefficients(fine_grid))]
    return np.concatenate([fine, roll[:, None]], 1)


def pose_from_landmarks(landmarks: np.ndarray, reference: np.ndarray = FACE_3D) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one face's (5, 2) landmarks; see :func:`poses_from_landmarks`."""
    yaw, pitch, roll = poses_from_landmarks(np.asarray(landmarks).reshape(1, 5, 2), reference)[0]
    return float(yaw), float(pitch), float(roll)
