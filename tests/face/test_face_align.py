"""ArcFace five-point alignment: the template, the similarity estimate, the crop."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.face.align import (
    ARCFACE_TEMPLATE,
    align_face,
    alignment_matrix,
    estimate_similarity,
    template_for_size,
    transform_points,
)


def test_template_maps_onto_itself():
    m = alignment_matrix(ARCFACE_TEMPLATE, 112)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(transform_points(ARCFACE_TEMPLATE, m), ARCFACE_TEMPLATE, atol=1e-5)


def test_matches_skimage_similarity_transform():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(1)
    for _ in range(5):
        src = rng.random((5, 2)) * 400
        ref = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE.astype(np.float64)).params[:2]
        np.testing.assert_allclose(estimate_similarity(src, ARCFACE_TEMPLATE), ref, atol=1e-6)


def test_recovers_a_known_similarity():
    angle, scale, shift = np.deg2rad(25), 2.7, np.array([130.0, -40.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE @ rot.T + shift
    m = estimate_similarity(src, ARCFACE_TEMPLATE)  # should be the exact inverse
    np.testing.assert_allclose(transform_points(src, m), ARCFACE_TEMPLATE, atol=1e-4)


def test_other_sizes_follow_insightface_rule():
    np.testing.assert_allclose(template_for_size(224), ARCFACE_TEMPLATE * 2, rtol=1e-6)
    t128 = template_for_size(128)
    np.testing.assert_allclose(t128[:, 0], ARCFACE_TEMPLATE[:, 0] + 8.0, rtol=1e-6)
    np.testing.assert_allclose(t128[:, 1], ARCFACE_TEMPLATE[:, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        template_for_size(100)


def test_align_face_puts_landmarks_on_template():
    """Dots drawn at rotated/scaled landmark positions land on the template pixels after alignment."""
    import cv2

    angle, scale, shift = np.deg2rad(-15), 3.0, np.array([200.0, 150.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = ARCFACE_TEMPLATE @ rot.T + shift
    image = np.zeros((700, 700, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (round(float(x)), round(float(y))), 6, (255, 255, 255), -1)
    crop = align_face(image, landmarks, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE:
        assert crop[round(float(y)), round(float(x))].min() > 200
    assert crop.mean() < 40  # and nothing else is white
    assert align_face(image, landmarks, 224).shape == (224, 224, 3)


def test_degenerate_landmarks_are_a_clear_error():
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.zeros((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="NaN"):
        estimate_similarity(np.full((5, 2), np.nan), ARCFACE_TEMPLATE)
