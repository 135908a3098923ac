"""Detectors on real photos (YuNet, the offline default) and the SCRFD decoder on a tiny model in the
insightface det_10g output layout."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.face.detectors import SCRFDDetector, YuNetDetector, nms
from gandiff.face.onnx_models import ModelFileError
from gandiff.face.types import Detection


def _check_landmark_order(det: Detection) -> None:
    lm = det.landmarks
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left eye / mouth corner first
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth
    x1, y1, x2, y2 = det.box
    assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all() and (lm[:, 1] < y2).all()


def test_t1_all_six_faces(t1_detections):
    assert len(t1_detections) == 6
    scores = [d.score for d in t1_detections]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.8
    for d in t1_detections:
        _check_landmark_order(d)
        assert 80 < d.width < 140  # the six faces are all about 100 px wide


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "tom_hanks"])
def test_single_portraits(yunet, photos, name):
    dets = yunet.detect(photos[name])
    assert len(dets) == 1
    _check_landmark_order(dets[0])


def test_matches_opencv_face_detector_yn(photos, model_paths):
    """At native size our onnxruntime decode reproduces OpenCV's own FaceDetectorYN on the same file."""
    import cv2

    if not hasattr(cv2, "FaceDetectorYN"):
        pytest.skip("this OpenCV build has no FaceDetectorYN")
    image = photos["t1"]
    ref = cv2.FaceDetectorYN.create(model_paths["yunet"], "", (image.shape[1], image.shape[0]), 0.6, 0.3, 5000)
    _, faces = ref.detect(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV takes BGR
    ours = YuNetDetector(model_paths["yunet"], input_size=None, device="cpu").detect(image)
    assert len(ours) == len(faces) == 6
    for d, row in zip(ours, faces[np.argsort(-faces[:, 14])]):
        np.testing.assert_allclose(d.box, [row[0], row[1], row[0] + row[2], row[1] + row[3]], atol=0.05)
        np.testing.assert_allclose(d.landmarks, row[4:14].reshape(5, 2), atol=0.05)
        assert abs(d.score - row[14]) < 1e-4


def test_batch_equals_one_by_one(yunet, photos, model_paths):
    images = [photos["t1"], photos["astronaut"], photos["grace_hopper"]]
    batching = YuNetDetector(model_paths["yunet"], device="cpu")
    batching.max_cpu_batch = 8  # the CPU default runs one image per call (faster there); exercise real batches
    batched = batching.detect_batch(images)
    for image, dets in zip(images, batched):
        single = yunet.detect(image)
        assert len(single) == len(dets)
        for a, b in zip(single, dets):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_no_face_tiny_face_huge_and_gray_images(yunet, photos, model_paths):
    import cv2

    assert yunet.detect(np.zeros((300, 400, 3), np.uint8)) == []
    assert yunet.detect(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)) == []
    tiny = cv2.resize(photos["astronaut"], (24, 24), interpolation=cv2.INTER_AREA)
    assert yunet.detect(tiny) == []  # a 4-pixel face: nothing, not a crash
    assert yunet.detect(np.zeros((1, 1, 3), np.uint8)) == []
    huge = cv2.resize(photos["astronaut"], (5000, 5000), interpolation=cv2.INTER_LINEAR)
    dets = yunet.detect(huge)
    assert len(dets) == 1 and 700 < dets[0].width < 1100  # coordinates in the huge image's pixels
    gray = np.repeat(cv2.cvtColor(photos["astronaut"], cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    assert len(yunet.detect(gray)) == 1
    strict = YuNetDetector(model_paths["yunet"], min_face_size=200, device="cpu")
    assert strict.detect(photos["t1"]) == []
    with pytest.raises(ValueError, match="uint8 RGB"):
        yunet.detect(np.zeros((10, 10), np.uint8))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.8, 0.9, 0.5]), 0.3).tolist() == [1, 2]


def test_wrong_or_missing_model_names_file_and_key(tmp_path, model_paths):
    with pytest.raises(ModelFileError, match=r"face\.detector\.model_path=.*no such file"):
        YuNetDetector(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="junk.onnx"):
        YuNetDetector(junk)
    with pytest.raises(ModelFileError, match=r"face\.detector\.model_path=.*9 or 15"):
        SCRFDDetector(model_paths["yunet"])  # a YuNet file where SCRFD is configured


# ---- SCRFD: a constant-output model in det_10g's layout -------------------------------------------------

def _scrfd_model(path, batched: bool):
    """64x64 input; outputs score/bbox/kps for strides 8, 16, 32 with 2 anchors per cell (det_10g order).

    Two faces are planted: stride 16, cell (row 1, col 2), anchor 1, score 0.9 (plus a weaker duplicate on
    anchor 0 that NMS must remove), and stride 8, cell (row 6, col 1), anchor 0, score 0.7.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = {8: 8 * 8 * 2, 16: 4 * 4 * 2, 32: 2 * 2 * 2}
    scores = {s: np.full((n, 1), 0.01, np.float32) for s, n in rows.items()}
    bbox = {s: np.ones((n, 4), np.float32) for s, n in rows.items()}
    kps = {s: np.zeros((n, 10), np.float32) for s, n in rows.items()}
    face_kps = np.array([-0.5, -0.25, 0.5, -0.25, 0.0, 0.25, -0.4, 0.9, 0.4, 0.9], np.float32)
    for idx, score in (((1 * 4 + 2) * 2 + 1, 0.9), ((1 * 4 + 2) * 2 + 0, 0.8)):
        scores[16][idx], bbox[16][idx], kps[16][idx] = score, [1.0, 0.5, 1.0, 1.5], face_kps
    idx = (6 * 8 + 1) * 2
    scores[8][idx], bbox[8][idx], kps[8][idx] = 0.7, [1.0, 1.0, 1.0, 1.0], face_kps
    consts = [scores[s] for s in (8, 16, 32)] + [bbox[s] for s in (8, 16, 32)] + [kps[s] for s in (8, 16, 32)]
    names = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]  # as in det_10g.onnx
    batch = "N" if batched else 1
    nodes = [helper.make_node("ReduceSum", ["input.1", "axes"], ["total"], keepdims=1),
             helper.make_node("Mul", ["total", "zero"], ["zero_nchw"])]
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    if batched:
        nodes.append(helper.make_node("Reshape", ["zero_nchw", "shape3"], ["zero_b"]))
        inits.append(numpy_helper.from_array(np.array([0, 1, 1], np.int64), "shape3"))
    else:
        nodes.append(helper.make_node("ReduceSum", ["zero_nchw"], ["zero_b"], keepdims=0))
    outputs = []
    for name, c in zip(names, consts):
        value = c[None] if batched else c
        inits.append(numpy_helper.from_array(value, f"c{name}"))
        nodes.append(helper.make_node("Add", [f"c{name}", "zero_b"], [name]))
        shape = [batch, *c.shape] if batched else list(c.shape)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "scrfd_tiny", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [batch, 3, 64, 64])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("batched", [False, True])
def test_scrfd_decode_in_insightface_layout(tmp_path, batched):
    path = _scrfd_model(tmp_path / "det_tiny.onnx", batched)
    det = SCRFDDetector(path, score_threshold=0.5, input_size=(64, 64), device="cpu")
    assert det.batched is batched
    image = np.zeros((128, 128, 3), np.uint8)  # letterboxed at scale 0.5
    faces = det.detect(image)
    assert [round(f.score, 3) for f in faces] == [0.9, 0.7]  # the 0.8 duplicate was suppressed
    # stride 16, cell (1, 2): centre (32, 16); distances (1, .5, 1, 1.5) * 16; then / 0.5 back to the image
    np.testing.assert_allclose(faces[0].box, [32, 16, 96, 80], atol=1e-4)
    expected = (np.array([32.0, 16.0]) + np.array([[-0.5, -0.25], [0.5, -0.25], [0, 0.25], [-0.4, 0.9],
                                                     [0.4, 0.9]]) * 16) * 2
    np.testing.assert_allclose(faces[0].landmarks, expected, atol=1e-4)
    # stride 8, cell (6, 1): centre (8, 48), box +-8
    np.testing.assert_allclose(faces[1].box, [0, 80, 32, 112], atol=1e-4)
    det.max_cpu_batch = 8  # real batches even on the CPU
    batch = det.detect_batch([image, np.zeros((64, 256, 3), np.uint8), image])
    assert [len(b) for b in batch] == [2, 2, 2]
    np.testing.assert_allclose(batch[1][0].box, faces[0].box * 2, atol=1e-4)  # scale 0.25 this time
