"""Embedders: SFace against OpenCV's reference, identity behaviour on real photos, and the insightface ONNX
layout exercised with a tiny IResNet exported from torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gandiff.face.align import align_face
from gandiff.face.embedders import OnnxEmbedder, SFaceEmbedder, TorchEmbedder, cosine_similarity
from gandiff.face.onnx_models import ModelFileError


def test_sface_matches_opencv_dnn(crops, model_paths, sface):
    """Input convention check: OpenCV FaceRecognizerSF.feature = blobFromImage(bgr, 1, (112,112), 0, swapRB=True)."""
    import cv2

    net = cv2.dnn.readNetFromONNX(model_paths["sface"])
    ours = sface.embed(crops[:3])
    for crop, emb in zip(crops[:3], ours):
        blob = cv2.dnn.blobFromImage(np.ascontiguousarray(crop[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0), True, False)
        net.setInput(blob, "data")
        ref = net.forward().reshape(-1)
        assert cosine_similarity(ref, emb) > 0.9999


def test_sface_identity_separation(crops, photos, yunet, sface):
    import cv2

    emb = sface.embed(crops)
    assert emb.shape == (9, sface.dim) == (9, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    different = sims[~np.eye(len(emb), dtype=bool)]
    # same person: the mirror image and brightness-changed copies of the photo, re-detected and re-aligned
    same = []
    for name in ("astronaut", "grace_hopper", "t1"):
        image = photos[name]
        first = yunet.detect(image)[0]
        base = sface.embed(align_face(image, first.landmarks))[0]
        centre = (first.box[:2] + first.box[2:]) / 2
        mirrored = np.array([image.shape[1] - centre[0], centre[1]])
        for variant, where in ((np.ascontiguousarray(image[:, ::-1]), mirrored),
                               (cv2.convertScaleAbs(image, alpha=0.6, beta=0), centre),
                               (cv2.convertScaleAbs(image, alpha=1.0, beta=60), centre)):
            # the same face in the variant: the detection nearest to where it must be
            d = min(yunet.detect(variant), key=lambda d: np.linalg.norm((d.box[:2] + d.box[2:]) / 2 - where))
            same.append(float(base @ sface.embed(align_face(variant, d.landmarks))[0]))
    assert min(same) > 0.6, same
    assert different.max() < 0.4, different.max()
    assert min(same) - different.max() > 0.25


def test_batch_flip_and_empty(crops, model_paths, sface):
    one_by_one = np.concatenate([sface.embed(c[None]) for c in crops[:4]])
    np.testing.assert_allclose(sface.embed(crops[:4]), one_by_one, atol=1e-5)
    assert sface.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)
    flipped = SFaceEmbedder(model_paths["sface"], flip=True, device="cpu")
    a = flipped.embed(crops[:2])
    b = flipped.embed(np.ascontiguousarray(crops[:2, :, ::-1]))
    np.testing.assert_allclose(a, b, atol=1e-5)  # flip fusion is mirror-invariant by construction
    with pytest.raises(ValueError, match=r"\(N, 112, 112, 3\) uint8"):
        sface.embed(np.zeros((2, 3, 112, 112), np.float32))


# ---- a tiny IResNet (arcface_torch naming) -> ONNX in the insightface layout ---------------------------

class _Block(nn.Module):
    """arcface_torch IBasicBlock: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + self.downsample(x)


class TinyIResNet(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.layer1 = nn.Sequential(_Block(8, 8, 2), _Block(8, 16, 2), _Block(16, 16, 2), _Block(16, 16, 2))
        self.bn2 = nn.BatchNorm2d(16)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(16 * 7 * 7, dim)
        self.features = nn.BatchNorm1d(dim)

    def forward(self, x):  # (B, 3, 112, 112) -> (B, dim)
        x = self.layer1(self.prelu(self.bn1(self.conv1(x))))
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


@pytest.fixture(scope="module")
def tiny_iresnet():
    torch.manual_seed(0)
    model = TinyIResNet().eval()
    with torch.no_grad():  # non-trivial BN statistics so that export bugs would show
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_embedder_equals_torch_on_insightface_layout(tmp_path, tiny_iresnet, crops):
    path = tmp_path / "w600k_tiny.onnx"
    # arcface_torch/torch2onnx.py: input "input.1"-style name, NCHW float, dynamic batch, opset 11
    torch.onnx.export(tiny_iresnet, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, opset_version=11,
                      input_names=["input.1"], output_names=["fc1"],
                      dynamic_axes={"input.1": {0: "None"}, "fc1": {0: "None"}})
    onnx_emb = OnnxEmbedder(path, mean=127.5, std=127.5, device="cpu")
    torch_emb = TorchEmbedder(tiny_iresnet, mean=127.5, std=127.5, device="cpu")
    assert onnx_emb.dim == torch_emb.dim == 16
    a, b = onnx_emb.embed(crops), torch_emb.embed(crops)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # the manual arcface_torch preprocessing, ((x / 255) - 0.5) / 0.5 on RGB, gives the same vectors
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_iresnet(x)).numpy()
    np.testing.assert_allclose(a, ref, atol=1e-5)
    bgr = OnnxEmbedder(path, input_bgr=True, device="cpu").embed(crops[:2])
    assert np.abs(bgr - a[:2]).max() > 1e-3  # colour order is honoured, not ignored


def test_torch_embedder_checkpoint_prefixes(tmp_path, tiny_iresnet, crops):
    ckpt = tmp_path / "magface_style.pth"
    torch.save({"state_dict": {f"features.module.{k}": v for k, v in tiny_iresnet.state_dict().items()}}, ckpt)
    loaded = TorchEmbedder(TinyIResNet, checkpoint=ckpt, device="cpu")  # a factory, as Hydra _partial_ gives
    np.testing.assert_allclose(loaded.embed(crops[:3]),
                               TorchEmbedder(tiny_iresnet, device="cpu").embed(crops[:3]), atol=1e-6)
    bad = tmp_path / "other.pth"
    torch.save({"conv9.weight": torch.zeros(1)}, bad)
    with pytest.raises(ModelFileError, match="other.pth.*does not match"):
        TorchEmbedder(TinyIResNet, checkpoint=bad, device="cpu")


def test_wrong_model_kind_for_embedder(model_paths):
    with pytest.raises(ModelFileError, match=r"face\.embedder\.model_path=.*112x112"):
        OnnxEmbedder(model_paths["age"])  # a 64x64 age model is not a recognizer


def test_prelu_rewrite_is_bit_exact(tmp_path):
    """CPU sessions replace PRelu by Mul + Max/Min (onnx_models.rewrite_prelu_for_cpu): same bits, and a
    layer whose slopes straddle 1 keeps its PRelu. Slopes reach PRelu through a Reshape, as in SFace."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from gandiff.face.onnx_models import create_session, load_onnx_model, rewrite_prelu_for_cpu

    rng = np.random.default_rng(0)
    slopes = {"low": rng.uniform(-0.8, 1.0, 4), "high": rng.uniform(1.0, 2.0, 4), "mixed": np.array([0.2, 1.5, 0.1, 1.2])}
    nodes, inits, prev = [], [], "x"
    for name, s in slopes.items():
        inits += [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), f"w_{name}"),
                  numpy_helper.from_array(s.astype(np.float32), f"s_{name}"),
                  numpy_helper.from_array(np.array([4, 1, 1], np.int64), f"shape_{name}")]
        nodes += [helper.make_node("Conv", [prev, f"w_{name}"], [f"c_{name}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Reshape", [f"s_{name}", f"shape_{name}"], [f"s3_{name}"]),
                  helper.make_node("PRelu", [f"c_{name}", f"s3_{name}"], [f"p_{name}"], name=f"prelu_{name}")]
        prev = f"p_{name}"
    graph = helper.make_graph(nodes, "prelu_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4, 9, 9])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "prelu.onnx"))
    x = rng.normal(size=(1, 4, 9, 9)).astype(np.float32)
    plain = load_onnx_model(tmp_path / "prelu.onnx", "test", "net")
    expected = create_session(plain, device="cpu").run(None, {"x": x})[0]
    assert rewrite_prelu_for_cpu(plain) == 2
    ops = [n.op_type for n in plain.graph.node]
    assert ops.count("PRelu") == 1 and ops.count("Max") == 1 and ops.count("Min") == 1
    np.testing.assert_array_equal(create_session(plain, device="cpu").run(None, {"x": x})[0], expected)


def test_sface_runtimes_agree_and_batching_does_not_change_bytes(crops, model_paths, sface):
    """CPU default: OpenCV's DNN engine (the reference's runtime). It matches onnxruntime and OpenCV's own
    one-crop-at-a-time reference to float rounding, and a crop's embedding is bitwise the same whatever the
    number of crops in its call (a lone crop runs as a batch of two)."""
    import cv2

    assert sface.runtime == "opencv"
    ort_sface = SFaceEmbedder(model_paths["sface"], device="cpu", runtime="onnxruntime")
    assert ort_sface.runtime == "onnxruntime"
    raw_cv, raw_ort = sface._raw(crops), ort_sface._raw(crops)
    scale = float(np.abs(raw_ort).max())
    assert np.abs(raw_cv - raw_ort).max() < 1e-5 * scale
    net = cv2.dnn.readNetFromONNX(model_paths["sface"])
    for crop, ours in zip(crops, raw_cv):
        net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(crop[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0),
                                           True, False), "data")
        assert np.abs(net.forward().reshape(-1) - ours).max() < 1e-5 * scale
    whole = sface.embed(crops)
    np.testing.assert_allclose(whole, ort_sface.embed(crops), atol=1e-6)
    assert np.array_equal(np.concatenate([sface.embed(c[None]) for c in crops]), whole)
    assert np.array_equal(np.concatenate([sface.embed(crops[:5]), sface.embed(crops[5:])]), whole)
    with pytest.raises(ValueError, match="face.embedder.runtime='tf'"):
        SFaceEmbedder(model_paths["sface"], device="cpu", runtime="tf")


@pytest.fixture(scope="module")
def many_crops(crops):
    """The photo crops, their mirrors and 16 DCGAN faces (64x64, resized to the crop size): 34 crops."""
    import cv2

    from gandiff.config import package_file
    from gandiff.identity.dcgan import DCGANSource

    src = DCGANSource(package_file("gan_face_generate/weights.tar"))
    faces = src.render(src.to_w(src.sample(range(16))))
    dcgan = np.stack([cv2.resize(f, (112, 112), interpolation=cv2.INTER_LINEAR) for f in faces])
    return np.ascontiguousarray(np.concatenate([crops, crops[:, :, ::-1], dcgan]))


def _opencv_chunks(path, crops, step, threads):
    """OpenCV DNN's own SFace output on ``step``-crop chunks at ``threads`` threads (then put back)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        net = cv2.dnn.readNetFromONNX(path)
        out = []
        for start in range(0, len(crops), step):
            net.setInput(np.ascontiguousarray(crops[start:start + step].transpose(0, 3, 1, 2), dtype=np.float32),
                         "data")
            out.append(np.array(net.forward()).reshape(-1, 128))
        return np.concatenate(out)
    finally:
        cv2.setNumThreads(before)


def test_sface_default_is_opencv_batched_output_bit_for_bit(many_crops, model_paths, sface):
    """The default (OpenCV, threads left alone) gives exactly OpenCV DNN's batched vectors, whatever the chunk
    size: the embeddings do not change when max_cpu_batch is tuned."""
    import cv2

    threads = cv2.getNumThreads()
    raw = sface._raw(many_crops)
    for step in (2, sface.max_cpu_batch, 32):
        assert np.array_equal(raw, _opencv_chunks(model_paths["sface"], many_crops, step, threads)), step


def test_sface_threads_option(many_crops, model_paths):
    """``threads`` pins OpenCV's pool for each forward (bit for bit what OpenCV gives at that count, and the
    process-wide count is put back) and onnxruntime's intra-op threads (same bits at any count)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        one = SFaceEmbedder(model_paths["sface"], device="cpu", threads=1)
        assert one.runtime == "opencv" and one.threads == 1
        raw = one._raw(many_crops)
        assert cv2.getNumThreads() == 2
        assert np.array_equal(raw, _opencv_chunks(model_paths["sface"], many_crops, 8, 1))
        default = SFaceEmbedder(model_paths["sface"], device="cpu")._raw(many_crops)
        scale = float(np.abs(default).max())
        assert np.abs(raw - default).max() < 1e-5 * scale  # OpenCV's sums differ by thread count only in rounding

        ort = {n: SFaceEmbedder(model_paths["sface"], device="cpu", runtime="onnxruntime", threads=n)._raw(many_crops)
               for n in (1, 2)}
        assert np.array_equal(ort[1], ort[2])
        net = cv2.dnn.readNetFromONNX(model_paths["sface"])  # FaceRecognizerSF.feature's steps, one crop per call
        ref = []
        for c in many_crops:
            net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(c[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0), True,
                                               False), "data")
            ref.append(net.forward().reshape(-1))
        ref = np.stack(ref)
        assert np.abs(ort[1] - ref).max() < 1e-5 * scale  # within float rounding of OpenCV's one-crop SFace
        assert np.abs(raw - ref).max() < 1e-5 * scale
    finally:
        cv2.setNumThreads(before)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"face\.embedder\.threads="):
            SFaceEmbedder(model_paths["sface"], device="cpu", threads=bad)
