"""The differentiable embedders: SFace rebuilt in torch equals onnxruntime's SFace on aligned faces; IResNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandiff.face.onnx_models import ModelFileError
from gandiff.face.sface_torch import DifferentiableEmbedder, IResNetFaceModule, SFaceTorch


@pytest.fixture(scope="module")
def sface_torch(model_paths):
    torch.set_num_threads(1)
    return SFaceTorch(model_paths["sface"])


def test_sface_torch_equals_onnxruntime(crops, sface, sface_torch):
    """The reference is onnxruntime running the same ONNX file (SFaceEmbedder): raw features and unit rows."""
    ref_raw = sface._raw(crops)  # (9, 128), onnxruntime
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        ours_raw = sface_torch(x).numpy()
    assert ours_raw.shape == ref_raw.shape == (9, 128)
    assert np.abs(ours_raw - ref_raw).max() < 1e-4 * max(1.0, float(np.abs(ref_raw).max()))
    ours, ref = DifferentiableEmbedder(sface_torch).embed(crops), sface.embed(crops)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # Same-person vs different-person structure carries over exactly: the 9 x 9 similarity matrices agree.
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-4)


def test_sface_torch_is_differentiable_and_frozen(crops, sface_torch):
    assert not any(p.requires_grad for p in sface_torch.parameters())
    x = torch.from_numpy(crops[:2]).permute(0, 3, 1, 2).float().requires_grad_(True)
    e = torch.nn.functional.normalize(sface_torch(x), dim=1)
    (e[0] @ e[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unsupported_operator_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["data"], ["out"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 112, 112])])
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelFileError, match="Softmax"):
        SFaceTorch(path)
    with pytest.raises(ModelFileError, match="no such file"):
        SFaceTorch(tmp_path / "missing.onnx")


def test_iresnet_module_equals_torch_embedder(tmp_path, crops):
    """IResNetFaceModule (arcface_torch .pth) embeds as TorchEmbedder does with the same checkpoint."""
    from gandiff.face.embedders import TorchEmbedder
    from gandiff.recognition.backbones import build_backbone

    torch.manual_seed(0)
    net = build_backbone("iresnet18", 64).eval()
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    module = IResNetFaceModule("iresnet18", tmp_path / "backbone.pth", embedding_size=64)
    ref = TorchEmbedder(build_backbone("iresnet18", 64), tmp_path / "backbone.pth", device="cpu").embed(crops[:3])
    np.testing.assert_allclose(DifferentiableEmbedder(module).embed(crops[:3]), ref, atol=1e-5)
