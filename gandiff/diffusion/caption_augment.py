"""Prompt families taught through captions: accessories and backgrounds drawn onto training faces.

The miniature model's text encoder knows only its captions' words, so a prompt family exists for it only if
its training images show it with the word in the caption. Glasses, sunglasses, hats, face masks and blue /
green / white backgrounds are drawn onto the DCGAN faces, placed from YuNet's five landmarks in the face's own
frame, anti-aliased at 4x; each shade comes from the ``rng`` passed in, so a dataset is a function of its
seed. The measured effect of each word: :mod:`gandiff.diffusion.prompt_effects`.

Design: docs/design.md#caption-augmentation.
"""

from __future__ import annotations

import numpy as np

ACCESSORIES = ("wearing glasses", "wearing sunglasses", "wearing a hat", "wearing a face mask")
BACKGROUNDS = {  # caption word -> base RGB colour
    "blue background": (52, 96, 200),
    "green background": (56, 150, 70),
    "white background": (236, 236, 232),
}
HAT_COLOURS = ((200, 36, 36), (36, 66, 190), (36, 140, 56), (222, 186, 32), (128, 44, 160), (226, 118, 24))
# surgical blue, white, dark grey (prompt_effects tells a mask from skin by colour distance)
MASK_COLOURS = ((158, 196, 228), (236, 238, 240), (60, 62, 70))
FRAME_COLOURS = ((18, 16, 16), (60, 36, 22), (48, 48, 52))
SCALE = 4  # supersampling of the drawing canvas
HEAD_AXES = (1.4, 1.9)  # head ellipse half-axes in inter-ocular distances (along u, along v)
HEAD_CENTRE_V = 0.3  # the ellipse's centre: c + 0.3 d v (between the eyes and the nose tip)


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(c, d, u, v) of five landmarks: the eyes' midpoint, inter-ocular distance and the face's axes."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    c = (lm[0] + lm[1]) / 2
    e = lm[1] - lm[0]
    d = max(float(np.hypot(*e)), 1e-6)
    u = e / d
    v = np.array([-u[1], u[0]])  # image y points down: (-uy, ux) turns u by +90 deg, towards the mouth
    if float(np.dot((lm[3] + lm[4]) / 2 - c, v)) < 0:
        v = -v
    return c, d, u, v


def _points(frame, ab: list[tuple[float, float]]) -> np.ndarray:
    c, d, u, v = frame
    return np.array([c + d * (a * u + b * v) for a, b in ab])


def head_mask(landmarks: np.ndarray, shape: tuple[int, int], feather: float = 2.0) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 inside the head ellipse, feathered by a Gaussian of ``feather`` px."""
    import cv2

    c, d, u, v = face_frame(landmarks)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # pixel centres
    centre = c + HEAD_CENTRE_V * d * v
    rel = np.stack([xx - centre[0], yy - centre[1]], -1)
    a, b = rel @ u / (HEAD_AXES[0] * d), rel @ v / (HEAD_AXES[1] * d)
    mask = (a * a + b * b <= 1.0).astype(np.float32)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    return mask


class _Canvas:
    """A supersampled RGBA layer over a (H, W, 3) image, drawn in image coordinates."""

    def __init__(self, shape: tuple[int, int]):
        h, w = shape
        self.rgb = np.zeros((h * SCALE, w * SCALE, 3), np.float32)
        self.alpha = np.zeros((h * SCALE, w * SCALE), np.float32)

    @staticmethod
    def _pt(p) -> tuple[int, int]:
        return int(round(p[0] * SCALE * 16)), int(round(p[1] * SCALE * 16))  # 4 fractional bits (shift=4)

    def polygon(self, pts: np.ndarray, colour, alpha: float = 1.0) -> None:
        import cv2

        layer = np.zeros(self.alpha.shape, np.float32)
        p = np.array([self._pt(q) for q in pts], np.int32)
        cv2.fillPoly(layer, [p], 1.0, lineType=cv2.LINE_AA, shift=4)
        self._paint(layer * alpha, colour)

    def polyline(self, pts: np.ndarray, colour, thickness: float, closed: bool = False, alpha: float = 1.0) -> None:
        import cv2

        layer = np.zeros(self.alpha.shape, np.float32)
        p = np.array([self._pt(q) for q in pts], np.int32)
        cv2.polylines(layer, [p], closed, 1.0, thickness=max(1, int(round(thickness * SCALE))),
                      lineType=cv2.LINE_AA, shift=4)
        self._paint(layer * alpha, colour)

    def _paint(self, layer: np.ndarray, colour) -> None:
        col = np.asarray(colour, np.float32)
        self.rgb = self.rgb * (1 - layer[..., None]) + col * layer[..., None]
        self.alpha = self.alpha + layer * (1 - self.alpha)

    def composite(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        # premultiplied colour and alpha, area-downsampled together
        rgb = cv2.resize(self.rgb * self.alpha[..., None], (w, h), interpolation=cv2.INTER_AREA)
        a = cv2.resize(self.alpha, (w, h), interpolation=cv2.INTER_AREA)[..., None]
        out = image.astype(np.float32) * (1 - a) + rgb
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _ellipse_pts(frame, centre_ab, axes_ab, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _points(frame, [(centre_ab[0] + axes_ab[0] * np.cos(s), centre_ab[1] + axes_ab[1] * np.sin(s)) for s in t])


def _shade(colour, rng: np.random.Generator, spread: float = 18.0) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-spread, spread), 0, 255)


def draw_accessory(image: np.ndarray, landmarks: np.ndarray, word: str, rng: np.random.Generator) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with the accessory ``word`` (one of :data:`ACCESSORIES`) drawn on."""
    if word not in ACCESSORIES:
        raise ValueError(f"accessory {word!r}: must be one of {list(ACCESSORIES)}")
    frame = face_frame(landmarks)
    d = frame[1]
    cv = _Canvas(image.shape[:2])
    if word in ("wearing glasses", "wearing sunglasses"):
        frame_col = _shade(FRAME_COLOURS[int(rng.integers(len(FRAME_COLOURS)))], rng, 8)
        rx, ry = (0.44, 0.31) if word == "wearing sunglasses" else (0.40, 0.28)
        thick = 0.075 * d
        for side in (-0.5, 0.5):
            lens = _ellipse_pts(frame, (side, 0.02), (rx, ry))
            if word == "wearing sunglasses":
                cv.polygon(lens, _shade((22, 22, 26), rng, 10), alpha=0.94)
            cv.polyline(lens, frame_col, thick, closed=True)
            outer = np.sign(side) * (abs(side) + rx)
            cv.polyline(_points(frame, [(outer, -0.05), (np.sign(side) * 1.02, -0.12)]), frame_col, thick)
        cv.polyline(_points(frame, [(-0.5 + rx, -0.06), (0.0, -0.12), (0.5 - rx, -0.06)]), frame_col, thick)
    elif word == "wearing a hat":
        col = _shade(HAT_COLOURS[int(rng.integers(len(HAT_COLOURS)))], rng)
        crown_top = -2.7 + rng.uniform(-0.2, 0.2)
        crown = _points(frame, [(-1.05, -0.7), (-1.1, -1.6), (-0.8, crown_top + 0.25), (0.0, crown_top),
                                (0.8, crown_top + 0.25), (1.1, -1.6), (1.05, -0.7)])
        cv.polygon(crown, col)
        brim = _points(frame, [(-1.55, -0.55), (1.55, -0.55), (1.45, -0.8), (-1.45, -0.8)])
        cv.polygon(brim, col * 0.8)
        cv.polyline(_points(frame, [(-1.08, -0.95), (1.08, -0.95)]), col * 0.6, 0.12 * d)  # hat band
    else:  # face mask
        col = _shade(MASK_COLOURS[int(rng.integers(len(MASK_COLOURS)))], rng, 10)
        mask = _points(frame, [(-0.95, 0.33), (-0.35, 0.26), (0.35, 0.26), (0.95, 0.33), (1.0, 1.0), (0.72, 1.5),
                               (0.0, 1.72), (-0.72, 1.5), (-1.0, 1.0)])
        cv.polygon(mask, col)
        for b in (0.75, 1.05):  # pleats
            cv.polyline(_points(frame, [(-0.85, b), (0.85, b)]), col * 0.82, 0.06 * d)
        for side in (-1, 1):  # straps towards the ears
            cv.polyline(_points(frame, [(side * 0.95, 0.36), (side * 1.3, 0.15)]), col * 0.9, 0.07 * d)
            cv.polyline(_points(frame, [(side * 1.0, 1.05), (side * 1.3, 0.75)]), col * 0.9, 0.07 * d)
    return cv.composite(image)


def replace_background(image: np.ndarray, landmarks: np.ndarray, word: str, rng: np.random.Generator) -> np.ndarray:
    """``image`` with the pixels outside the head ellipse replaced by the colour of ``word`` (:data:`BACKGROUNDS`),
    shaded by a vertical gradient and a little noise so that it reads as a backdrop, not a flat fill."""
    if word not in BACKGROUNDS:
        raise ValueError(f"background {word!r}: must be one of {list(BACKGROUNDS)}")
    h, w = image.shape[:2]
    base = _shade(BACKGROUNDS[word], rng, 12)
    grad = np.linspace(1.06, 0.9, h, dtype=np.float32)[:, None, None]  # lighter at the top
    field = base[None, None, :] * grad + rng.normal(0, 3.0, (h, w, 1)).astype(np.float32)
    m = head_mask(landmarks, (h, w))[..., None]
    out = image.astype(np.float32) * m + field * (1 - m)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
