"""Scoring helpers: which input each model gets (crops vs image + landmarks), and the detect_size rule."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.curation.score import classify_faces, crop_coverage, embed_faces
from gandiff.face.attributes import Attributes


def _faces():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64 + 8 * k, 80, 3), dtype=np.uint8) for k in range(3)]
    landmarks = [np.full((5, 2), 10.0 + k, np.float32) for k in range(3)]
    crops = np.zeros((3, 112, 112, 3), np.uint8)
    return list(zip(images, landmarks)), crops


def test_embedders_with_their_own_framing_get_the_image_and_landmarks():
    """dlib's ResNet (``embed_faces``) cuts its own chip from the image, as in gandiff.face.analyzer."""

    class ChipEmbedder:
        def embed_faces(self, faces):  # (image, landmarks) pairs -> one row each, recording what it got
            return np.stack([[img.shape[0], lm[0, 0]] for img, lm in faces]).astype(np.float32)

        def embed(self, crops):
            raise AssertionError("an embedder with its own framing must not get the ArcFace crop")

    faces, crops = _faces()
    out = embed_faces(faces, crops, ChipEmbedder(), batch_size=2)
    assert out.tolist() == [[64, 10], [72, 11], [80, 12]]

    class CropEmbedder:
        def embed(self, crops):
            return np.ones((len(crops), 4), np.float32)

    assert embed_faces(faces, crops, CropEmbedder(), batch_size=2).shape == (3, 4)


def test_classifier_gets_the_image_and_landmarks_through_classify_many():
    class Recorder:
        def classify_many(self, faces):
            self.got = faces
            return [Attributes(gender="female", gender_prob=0.912345, age=31.26, age_bin="30-39", race="east_asian",
                               race_probs={"east_asian": 0.7, "white": 0.3})] * len(faces)

        def classify_aligned(self, crops):
            raise AssertionError("the classifiers were trained on dlib chips: not the ArcFace crop")

    faces, _ = _faces()
    clf = Recorder()
    rows = classify_faces(faces, clf)
    assert [img.shape for img, _ in clf.got] == [img.shape for img, _ in faces]
    assert rows[0] == {"gender": "female", "gender_prob": 0.9123, "age": 31.26, "age_bin": "30-39",
                       "race": "east_asian", "race_prob": 0.7}
    assert classify_faces(faces, None) == [{}, {}, {}]


def test_detect_size_is_checked_and_sets_the_detectors_input():
    from gandiff.config import compose
    from gandiff.curation.stage import build_detector
    from gandiff.schema import ConfigError

    with pytest.raises(ConfigError, match=r"curation.detect_size=100: must be null or a multiple of 32"):
        compose(["logger=none", "curation.detect_size=100"])
    cfg = compose(["logger=none"])
    assert build_detector(cfg.face.detector, 160).input_size == (160, 160)
    assert build_detector(cfg.face.detector, None).input_size == tuple(cfg.face.detector.input_size)
    mtcnn = build_detector(compose(["logger=none", "face=mtcnn"]).face.detector, 160)  # an image pyramid:
    assert type(mtcnn).__name__ == "MTCNNDetector" and not hasattr(mtcnn, "input_size")  # no input size to set


def test_crop_coverage_is_the_fraction_of_the_aligned_crop_inside_the_image():
    from gandiff.face.align import align_face, template_for_size

    # Landmarks at the template itself: the crop is the image's top-left 112x112, all inside a 200x200 image,
    # half inside a 56-wide one (columns 0..55 of 112).
    lm = template_for_size(112)
    assert crop_coverage(lm, 200, 200) == pytest.approx(1.0)
    assert crop_coverage(lm, 112, 56) == pytest.approx(0.5, abs=0.01)
    # The same as counting the non-black pixels of align_face's own crop of a white image (bilinear edges aside).
    rng = np.random.default_rng(0)
    for _ in range(5):
        pts = lm * rng.uniform(0.3, 0.9) + rng.uniform(-10, 20, size=2)
        crop = align_face(np.full((64, 64, 3), 255, np.uint8), pts, 112)
        assert crop_coverage(pts, 64, 64) == pytest.approx((crop[..., 0] > 127).mean(), abs=0.02)
