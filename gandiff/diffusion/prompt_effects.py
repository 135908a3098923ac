"""Does a prompt word take effect? One measured statistic per option of the miniature prompt bank.

:data:`OPTION_EFFECTS` names, for each option of ``conf/prompts/miniature.yaml``, an image statistic the word
should raise or lower (eye-region darkness for "wearing sunglasses", a uniform crown for a hat, the
backdrop's colour, luminance, head turn, the age estimate ...). :func:`option_effects` compares each option's
images with the neutral prompt's (same seeds): difference of means and Cohen's d, with regions placed in the
face's own frame from five landmarks.

Design: docs/design.md#prompt-effects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gandiff.diffusion.caption_augment import face_frame, head_mask

# Mean YuNet landmarks of 64 DCGAN faces (64x64, LANDMARK_NAMES order): the frame used when none is detected.
CANONICAL_LANDMARKS = np.array([[22.8, 33.1], [42.6, 33.2], [33.8, 42.9], [24.7, 51.7], [41.7, 51.4]], np.float32)

# Regions in the face frame (a along the eyes, b towards the mouth, in inter-ocular distances; see
# caption_augment): (a0, a1, b0, b1).
EYES = ((-0.72, -0.28, -0.16, 0.18), (0.28, 0.72, -0.16, 0.18))
EYE_BAND = (-1.0, 1.0, -0.45, 0.4)
MOUTH = (-0.5, 0.5, 0.6, 1.3)
CROWN = (-0.8, 0.8, -1.7, -1.05)  # the crown: above the brow and above where a drawn hat's band sits (b -0.95)
NOSE_BRIDGE = (-0.35, 0.35, 0.0, 0.25)  # skin between the eyes, above where a drawn mask starts (b 0.26)
FACE = (-0.8, 0.8, -0.3, 1.3)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (..., 3) RGB, same scale as the input."""
    rgb = np.asarray(rgb, np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def region_pixels(image: np.ndarray, landmarks: np.ndarray | None, box: tuple[float, float, float, float],
                  n: int = 12, min_inside: float = 0.5) -> np.ndarray:
    """(K, C) float64 values of ``image`` (H, W, C) at an n x n grid over ``box`` in the face frame,
    bilinearly interpolated; grid points outside the image are left out (K <= n * n), and when fewer than
    ``min_inside`` of them are in the image none is kept (K = 0: the statistic is NaN, not a corner's value)."""
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[..., None]
    c, d, u, v = face_frame(CANONICAL_LANDMARKS if landmarks is None else landmarks)
    a0, a1, b0, b1 = box
    a, b = np.meshgrid(np.linspace(a0, a1, n), np.linspace(b0, b1, n))
    pts = c + d * (a.reshape(-1, 1) * u + b.reshape(-1, 1) * v) - 0.5  # pixel centres at integer + 0.5
    h, w = img.shape[:2]
    ok = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
    if ok.sum() < min_inside * len(ok):
        return np.empty((0, img.shape[2]), np.float64)
    pts = pts[ok]
    x0 = np.clip(np.floor(pts[:, 0]).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(pts[:, 1]).astype(int), 0, h - 2)
    fx, fy = (pts[:, 0] - x0)[:, None], (pts[:, 1] - y0)[:, None]
    return (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
            + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def eye_darkness(image, landmarks=None) -> float:
    """1 - mean luma / 255 over both eye patches (sunglasses: higher)."""
    return 1.0 - _mean(np.concatenate([luma(region_pixels(image, landmarks, e)) for e in EYES])) / 255.0


def eye_edges(image, landmarks=None) -> float:
    """Mean luma gradient magnitude / 255 (central differences) over the band of the eyes (glasses' frames: higher)."""
    y = luma(np.asarray(image))
    gy, gx = np.gradient(y)
    return _mean(region_pixels(np.hypot(gx, gy), landmarks, EYE_BAND)[:, 0]) / 255.0


def brow_texture(image, landmarks=None) -> float:
    """Standard deviation of luma / 255 over the crown, above where a hat's band sits (hair is textured; a hat's
    crown is uniform fabric: lower)."""
    y = luma(region_pixels(image, landmarks, CROWN))
    return float(np.std(y)) / 255.0 if len(y) else float("nan")


def mouth_vs_skin(image, landmarks=None) -> float:
    """Distance between the mean RGB over the mouth and chin and the nose bridge's (skin), / 255 (a face mask of
    any colour: higher; skin to skin: near 0)."""
    mouth, skin = region_pixels(image, landmarks, MOUTH), region_pixels(image, landmarks, NOSE_BRIDGE)
    if not len(mouth) or not len(skin):
        return float("nan")
    return float(np.linalg.norm(mouth.mean(0) - skin.mean(0))) / 255.0


def face_luma(image, landmarks=None) -> float:
    """Mean luma / 255 over the face (dark photo: lower, bright photo: higher)."""
    return _mean(luma(region_pixels(image, landmarks, FACE))) / 255.0


def _backdrop(image, landmarks) -> np.ndarray:
    img = np.asarray(image, np.float64)
    m = head_mask(CANONICAL_LANDMARKS if landmarks is None else landmarks, img.shape[:2])
    return img[m < 0.05]  # (K, 3) the pixels clearly outside the head ellipse


def backdrop_blue(image, landmarks=None) -> float:
    """Mean (B - (R + G) / 2) / 255 outside the head ellipse."""
    px = _backdrop(image, landmarks)
    return _mean(px[:, 2] - (px[:, 0] + px[:, 1]) / 2) / 255.0


def backdrop_green(image, landmarks=None) -> float:
    """Mean (G - (R + B) / 2) / 255 outside the head ellipse."""
    px = _backdrop(image, landmarks)
    return _mean(px[:, 1] - (px[:, 0] + px[:, 2]) / 2) / 255.0


def backdrop_white(image, landmarks=None) -> float:
    """Mean min(R, G, B) / 255 outside the head ellipse (high only where all three channels are)."""
    px = _backdrop(image, landmarks)
    return _mean(px.min(1)) / 255.0 if len(px) else float("nan")


def yaw(image, landmarks=None) -> float:
    """Head turn from the landmarks (:func:`gandiff.diffusion.miniature.yaw_ratio`: > 0 looks to the subject's left)."""
    from gandiff.diffusion.miniature import yaw_ratio

    return yaw_ratio(CANONICAL_LANDMARKS if landmarks is None else landmarks)


def eye_distance(image, landmarks=None) -> float:
    """Inter-ocular distance / image width (close-up: higher)."""
    return face_frame(CANONICAL_LANDMARKS if landmarks is None else landmarks)[1] / np.asarray(image).shape[1]


STATISTICS: dict[str, Callable[..., float]] = {
    "eye_darkness": eye_darkness, "eye_edges": eye_edges, "brow_texture": brow_texture, "mouth_vs_skin": mouth_vs_skin,
    "face_luma": face_luma, "backdrop_blue": backdrop_blue, "backdrop_green": backdrop_green,
    "backdrop_white": backdrop_white, "yaw": yaw, "eye_distance": eye_distance,
}

# option -> (statistic, sign): the statistic the word should move, and which way. "age" is the age
# classifier's estimate in years (passed in as ``age_of``): no pixel statistic stands for it.
OPTION_EFFECTS: dict[str, tuple[str, int]] = {
    "young": ("age", -1), "middle-aged": ("age", +1), "old": ("age", +1),
    "wearing glasses": ("eye_edges", +1), "wearing sunglasses": ("eye_darkness", +1),
    "wearing a hat": ("brow_texture", -1), "wearing a face mask": ("mouth_vs_skin", +1),
    "blue background": ("backdrop_blue", +1), "green background": ("backdrop_green", +1),
    "white background": ("backdrop_white", +1),
    "looking left": ("yaw", +1), "looking right": ("yaw", -1),
    "dark photo": ("face_luma", -1), "bright photo": ("face_luma", +1),
    "close-up": ("eye_distance", +1),
}


@dataclasses.dataclass(frozen=True)
class OptionEffect:
    option: str
    statistic: str
    sign: int
    option_mean: float
    neutral_mean: float
    effect: float  # sign * (option_mean - neutral_mean): > 0 when the word moved the image its way
    cohens_d: float  # sign * difference of means / pooled standard deviation
    n_option: int
    n_neutral: int


def statistic_values(name: str, faces: Sequence[tuple[np.ndarray, np.ndarray | None]],
                     age_of: Callable[[np.ndarray, np.ndarray | None], float] | None = None) -> np.ndarray:
    """The statistic ``name`` of each (image, landmarks or None) pair."""
    if name == "age":
        if age_of is None:
            raise ValueError("statistic 'age' needs age_of(image, landmarks) -> years (an age classifier)")
        return np.array([age_of(img, lm) for img, lm in faces], np.float64)
    if name not in STATISTICS:
        raise ValueError(f"statistic {name!r}: must be one of {sorted(STATISTICS) + ['age']}")
    return np.array([STATISTICS[name](img, lm) for img, lm in faces], np.float64)


def cohens_d(x: np.ndarray, y: np.ndarray) -> float:
    """(mean(x) - mean(y)) / pooled sample standard deviation (ddof=1); nan when undefined."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    pooled = np.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else float("nan")


def option_effects(by_option: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray | None]]],
                   neutral: Sequence[tuple[np.ndarray, np.ndarray | None]],
                   age_of: Callable[[np.ndarray, np.ndarray | None], float] | None = None) -> list[OptionEffect]:
    """Each option's :class:`OptionEffect` against the neutral prompt's images (options without a
    statistic in :data:`OPTION_EFFECTS` raise, naming them)."""
    unknown = [o for o in by_option if o not in OPTION_EFFECTS]
    if unknown:
        raise ValueError(f"options {unknown}: no measured effect (known: {sorted(OPTION_EFFECTS)})")
    out = []
    cache: dict[str, np.ndarray] = {}
    for option, faces in by_option.items():
        stat, sign = OPTION_EFFECTS[option]
        if stat not in cache:
            cache[stat] = statistic_values(stat, neutral, age_of)
        base, vals = cache[stat], statistic_values(stat, faces, age_of)
        om, nm = float(np.nanmean(vals)), float(np.nanmean(base))
        out.append(OptionEffect(option, stat, sign, om, nm, sign * (om - nm), sign * cohens_d(vals, base),
                                len(vals), len(base)))
    return out
