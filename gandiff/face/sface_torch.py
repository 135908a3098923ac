"""Differentiable face embedders for training losses: SFace rebuilt in torch from its ONNX graph, and IResNet.

An identity loss (``dreambooth.identity_loss``) needs the gradient of an embedding with respect to the pixels,
which onnxruntime cannot give. :class:`SFaceTorch` runs the OpenCV-Zoo SFace ONNX graph with torch operators
(constants folded), equal to onnxruntime on the same input; :class:`IResNetFaceModule` loads an arcface_torch
IResNet. Input: ``(N, 3, 112, 112)`` float RGB in 0..255, ArcFace-aligned, normalised inside; output raw
``(N, D)`` features. Weights are buffers: nothing here trains.

Design: docs/design.md#differentiable-embedders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandiff.face.onnx_models import ModelFileError

SFACE_WHAT = "SFace recognizer ONNX (OpenCV Zoo)"


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, a: dict[str, Any]) -> torch.Tensor:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:  # asymmetric padding: pad explicitly (left/right, top/bottom), then convolve
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0]
    return F.conv2d(x, w, b, tuple(a.get("strides", [1, 1])), tuple(pads[:2]), tuple(a.get("dilations", [1, 1])),
                    int(a.get("group", 1)))


def _bn_affine(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float):
    """Inference BatchNormalization as ``x * scale + shift`` per channel (ONNX BatchNormalization, opset 15+)."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


class OnnxGraphModule(nn.Module):
    """A feed-forward ONNX graph of ``Conv, BatchNormalization, PRelu, Add, Sub, Mul, Dropout, Flatten, Gemm,
    Reshape, Constant, Identity`` as a torch module (the operators SFace and MobileFaceNet-like exports use).

    Constant subgraphs (every input an initializer or a Constant) are evaluated once here, in numpy; a
    BatchNormalization that is the only reader of a Conv's output is folded into that Conv's weights. An
    operator outside that list is refused with its name, so a graph this cannot run fails at load time.
    """

    OPS = ("Conv", "BatchNormalization", "PRelu", "Add", "Sub", "Mul", "Dropout", "Flatten", "Gemm", "Reshape",
           "Identity", "Relu")

    def __init__(self, model: Any, config_key: str):
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in const]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelFileError(f"{config_key}: expected one data input and one output, got inputs {inputs} and "
                                 f"{len(graph.output)} outputs")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        readers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                readers[name] = readers.get(name, 0) + 1
        nodes = []
        for node in graph.node:  # constant folding
            a = _attrs(node)
            if node.op_type == "Constant":
                const[node.output[0]] = numpy_helper.to_array(a["value"]) if "value" in a else np.asarray(a["value_float"])
                continue
            if node.op_type == "Reshape" and all(n in const for n in node.input):
                const[node.output[0]] = const[node.input[0]].reshape(const[node.input[1]].astype(np.int64))
                continue
            if node.op_type not in self.OPS:
                raise ModelFileError(f"{config_key}: ONNX operator {node.op_type} ({node.name or node.output[0]}) "
                                     f"is not supported by {type(self).__name__} (supported: {', '.join(self.OPS)})")
            nodes.append((node.op_type, list(node.input), node.output[0], a))
        # Fold BatchNormalization into the Conv before it (inference BN is a per-channel affine map).
        folded: list[tuple[str, list[str], str, dict[str, Any]]] = []
        skip: set[int] = set()
        for k, (op, ins, out, a) in enumerate(nodes):
            if k in skip:
                continue
            nxt = nodes[k + 1] if k + 1 < len(nodes) else None
            if (op == "Conv" and nxt is not None and nxt[0] == "BatchNormalization" and nxt[1][0] == out
                    and readers.get(out, 0) == 1 and all(n in const for n in ins[1:] + nxt[1][1:])):
                scale, shift = _bn_affine(*(const[n] for n in nxt[1][1:5]), float(nxt[3].get("epsilon", 1e-5)))
                w = const[ins[1]].astype(np.float64) * scale[:, None, None, None]
                b = const[ins[2]].astype(np.float64) if len(ins) > 2 and ins[2] else np.zeros(len(scale))
                const[out + "/w"], const[out + "/b"] = w.astype(np.float32), (b * scale + shift).astype(np.float32)
                folded.append(("Conv", [ins[0], out + "/w", out + "/b"], nxt[2], a))
                skip.add(k + 1)
            else:
                folded.append((op, ins, out, a))
        used = {n for _, ins, _, _ in folded for n in ins}
        self._buffer_of: dict[str, str] = {}
        for i, name in enumerate(sorted(n for n in used if n in const)):
            self._buffer_of[name] = f"c{i}"
            self.register_buffer(f"c{i}", torch.from_numpy(np.ascontiguousarray(const[name]).astype(np.float32)))
        self.program = folded

    def _value(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
        return env[name] if name in env else getattr(self, self._buffer_of[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_name: x}
        for op, ins, out, a in self.program:
            v = [self._value(n, env) if n else None for n in ins]
            env[out] = _RUN[op](v, a)
        return env[self.output_name]


def _prelu(v: list, a: dict) -> torch.Tensor:
    x, slope = v
    if slope.ndim == 1 and x.ndim == 4:  # ONNX broadcasts a (C,) slope against the last axis; MXNet exports
        slope = slope.view(1, -1, 1, 1) if slope.numel() == x.shape[1] else slope  # mean channels
    return torch.where(x >= 0, x, x * slope)


def _bn(v: list, a: dict) -> torch.Tensor:
    x, gamma, beta, mean, var = v
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.view(shape)) * (gamma / torch.sqrt(var + float(a.get("epsilon", 1e-5)))).view(shape) \
        + beta.view(shape)


def _gemm(v: list, a: dict) -> torch.Tensor:
    x, w = v[0], v[1]
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = float(a.get("alpha", 1.0)) * (x @ w)
    if len(v) > 2 and v[2] is not None:
        y = y + float(a.get("beta", 1.0)) * v[2]
    return y


_RUN: dict[str, Callable[[list, dict], torch.Tensor]] = {
    "Conv": lambda v, a: _conv(v[0], v[1], v[2] if len(v) > 2 else None, a),
    "BatchNormalization": _bn,
    "PRelu": _prelu,
    "Relu": lambda v, a: torch.relu(v[0]),
    "Add": lambda v, a: v[0] + v[1],
    "Sub": lambda v, a: v[0] - v[1],
    "Mul": lambda v, a: v[0] * v[1],
    "Dropout": lambda v, a: v[0],  # inference: identity
    "Identity": lambda v, a: v[0],
    "Flatten": lambda v, a: v[0].flatten(int(a.get("axis", 1))),
    "Gemm": _gemm,
    "Reshape": lambda v, a: v[0].reshape([int(s) if int(s) != 0 else v[0].shape[i] for i, s in enumerate(v[1])]),
}


class SFaceTorch(nn.Module):
    """SFace (OpenCV Zoo ``face_recognition_sface_2021dec``) in torch: ``(N, 3, 112, 112)`` RGB 0..255 -> (N, 128).

    The input convention is SFaceEmbedder's (the ``(x - 127.5) * 0.0078125`` step is inside the graph).
    """

    def __init__(self, model_path: str | os.PathLike, config_key: str = "dreambooth.identity_embedder.model_path"):
        super().__init__()
        from gandiff.face.onnx_models import load_onnx_model

        model = load_onnx_model(model_path, config_key, SFACE_WHAT)
        self.graph = OnnxGraphModule(model, f"{config_key}={str(model_path)!r}")
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


class IResNetFaceModule(nn.Module):
    """An arcface_torch IResNet (``gandiff.recognition.backbones``, insightface parameter names) from a ``.pth``
    state dict: ``(N, 3, 112, 112)`` RGB 0..255 -> (N, embedding_size), normalised ``(x - 127.5) / 127.5``
    inside as arcface_torch trains. Loaded with ``weights_only=True``; prefixes as TorchEmbedder strips them."""

    def __init__(self, arch: str = "iresnet50", checkpoint: str | os.PathLike | None = None, embedding_size: int = 512,
                 config_key: str = "dreambooth.identity_embedder.checkpoint"):
        super().__init__()
        from gandiff.face.embedders import TorchEmbedder
        from gandiff.recognition.backbones import build_backbone

        backbone = build_backbone(arch, embedding_size)
        # TorchEmbedder owns checkpoint reading (weights_only, prefixes, exact key match): reuse it.
        self.backbone = TorchEmbedder(backbone, checkpoint, device="cpu", config_key=config_key).module
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - 127.5) / 127.5)


class DifferentiableEmbedder:
    """The Embedder protocol (uint8 RGB aligned crops -> unit rows) around a module here: for checks and tests."""

    def __init__(self, module: nn.Module, batch_size: int = 32):
        self.module, self.batch_size = module.eval(), max(1, int(batch_size))
        with torch.no_grad():
            self.dim = int(module(torch.zeros(1, 3, 112, 112)).shape[1])

    def embed(self, aligned_batch: np.ndarray) -> np.ndarray:
        from gandiff.face.embedders import check_aligned_batch

        crops = check_aligned_batch(aligned_batch)
        out = []
        with torch.no_grad():
            for s in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(crops[s:s + self.batch_size])).permute(0, 3, 1, 2).float()
                out.append(F.normalize(self.module(x), dim=1))
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)
