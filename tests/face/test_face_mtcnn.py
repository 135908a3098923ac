"""MTCNN with facenet-pytorch's shipped weights: the cascade on real photos, checked against YuNet, and the
networks' and loader's contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandiff.face.align import align_face
from gandiff.face.detectors import MTCNNDetector
from gandiff.face.mtcnn import ONet, PNet, RNet, nms_min, pyramid_scales
from gandiff.face.onnx_models import ModelFileError


def box_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return float(w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h))


def _check_landmark_order(det) -> None:
    lm = det.landmarks
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left eye / mouth corner first
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth


def test_t1_finds_all_six_faces(mtcnn, photos, t1_detections):
    """All six people, each overlapping YuNet's box; at facenet-pytorch's default thresholds two non-faces
    (a hand, a bowl) also pass O-Net, with lower scores (conf/face/mtcnn.yaml says how to drop them)."""
    dets = mtcnn.detect(photos["t1"])
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    matched = set()
    for ref in t1_detections:
        best = max(range(len(dets)), key=lambda i: box_iou(dets[i].box, ref.box))
        assert box_iou(dets[best].box, ref.box) > 0.7
        assert dets[best].score > 0.95
        _check_landmark_order(dets[best])
        matched.add(best)
    assert len(matched) == 6
    extras = [dets[i].score for i in range(len(dets)) if i not in matched]
    assert len(extras) <= 2 and all(s < 0.9 for s in extras), extras


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_portraits_agree_with_yunet(mtcnn, yunet, sface, photos, name):
    image = photos[name]
    (ours,), (ref,) = mtcnn.detect(image), yunet.detect(image)
    assert box_iou(ours.box, ref.box) > 0.5
    _check_landmark_order(ours)
    # The two detectors define the points slightly differently (MTCNN's mouth corners sit higher): within
    # a quarter of the eye distance each, measured 0.04-0.15.
    err = np.linalg.norm(ours.landmarks - ref.landmarks, axis=1) / ref.eye_distance
    assert err.max() < 0.25, err
    # ... and both give crops SFace recognises as the same face (measured 0.94-0.96).
    a = sface.embed(align_face(image, ours.landmarks))[0]
    b = sface.embed(align_face(image, ref.landmarks))[0]
    assert float(a @ b) > 0.8


def test_batch_equals_one_by_one_and_shrinking(mtcnn, mtcnn_paths, photos):
    images = [photos["astronaut"], photos["grace_hopper"], photos["astronaut"][::-1].copy(), photos["astronaut"]]
    batched = mtcnn.detect_batch(images)  # two same-sized images share P-Net calls
    assert [len(b) for b in batched] == [1, 1, 0, 1]  # an upside-down face is not a face to MTCNN
    np.testing.assert_allclose(batched[3][0].box, batched[0][0].box, atol=1e-3)
    for image, dets in zip(images[:3], batched):  # the fourth is the first again
        for a, b in zip(mtcnn.detect(image), dets):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
    full = batched[0][0]
    small = MTCNNDetector(**mtcnn_paths, max_side=256, device="cpu").detect(photos["astronaut"])
    assert len(small) == 1 and box_iou(small[0].box, full.box) > 0.8  # coordinates of the original image


def test_no_face_tiny_and_bad_inputs(mtcnn, mtcnn_paths, photos):
    assert mtcnn.detect(np.zeros((300, 400, 3), np.uint8)) == []
    assert mtcnn.detect(np.zeros((1, 1, 3), np.uint8)) == []  # smaller than one P-Net window
    assert MTCNNDetector(**mtcnn_paths, min_face_size=200, device="cpu").detect(photos["astronaut"]) == []
    with pytest.raises(ValueError, match="uint8 RGB"):
        mtcnn.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="thresholds"):
        MTCNNDetector(**mtcnn_paths, thresholds=[0.6, 0.7])
    with pytest.raises(ValueError, match="minsize"):
        MTCNNDetector(**mtcnn_paths, minsize=4)


def test_weight_files_are_checked(tmp_path, mtcnn_paths, model_paths):
    paths = dict(mtcnn_paths)
    with pytest.raises(ModelFileError, match=r"face\.detector\.pnet_path=.*no such file"):
        MTCNNDetector(**{**paths, "pnet_path": tmp_path / "pnet.pt"})
    with pytest.raises(ModelFileError, match=r"face\.detector\.pnet_path=.*tensors do not match PNet"):
        MTCNNDetector(**{**paths, "pnet_path": paths["rnet_path"]})
    with pytest.raises(ModelFileError, match=r"face\.detector\.onet_path=.*not a weights-only torch file"):
        MTCNNDetector(**{**paths, "onet_path": model_paths["yunet"]})


def test_network_shapes_and_pyramid():
    """P-Net scores one 12x12 window per output cell at stride 2; R-/O-Net take 24 / 48 px crops."""
    with torch.no_grad():
        reg, prob = PNet()(torch.zeros(1, 3, 12, 12))
        assert reg.shape == (1, 4, 1, 1) and prob.shape == (1, 2, 1, 1)
        assert PNet()(torch.zeros(2, 3, 30, 40))[1].shape == (2, 2, 10, 15)
        assert [t.shape for t in RNet()(torch.zeros(3, 3, 24, 24))] == [(3, 4), (3, 2)]
        assert [t.shape for t in ONet()(torch.zeros(3, 3, 48, 48))] == [(3, 4), (3, 10), (3, 2)]
    scales = pyramid_scales(886, 1280, minsize=20, factor=0.709)
    assert scales[0] == pytest.approx(12 / 20) and len(scales) == 12
    assert 886 * scales[-1] >= 12 > 886 * scales[-1] * 0.709
    np.testing.assert_allclose(np.diff(np.log(scales)), np.log(0.709))


def test_nms_min_uses_the_smaller_box():
    # a small box inside a big one overlaps it fully by intersection-over-minimum, however small its IoU
    boxes = np.array([[0, 0, 99, 99], [10, 10, 29, 29], [200, 200, 220, 220]], np.float32)
    assert nms_min(boxes, np.array([0.9, 0.95, 0.5]), 0.7).tolist() == [1, 2]


def test_config_option_builds_mtcnn():
    from gandiff.config import compose
    from gandiff.face.analyzer import build_analyzer

    cfg = compose(["face=mtcnn", "logger=none"])
    analyzer = build_analyzer(cfg.face, None, device="cpu")
    assert isinstance(analyzer.detector, MTCNNDetector) and analyzer.detector.thresholds == (0.6, 0.7, 0.7)
