"""Face embedders behind one protocol: aligned RGB uint8 crops in, L2-normalised float32 vectors out.

The embedder owns the input convention (see ARCHITECTURE.md "Face tensors have one convention"):
callers always pass ``(N, 112, 112, 3)`` uint8 **RGB** crops aligned to the ArcFace template
(:func:`gandiff.face.align.align_face`); each embedder applies its model's own colour order and
normalisation, optional flip fusion, and returns ``(N, dim)`` float32 rows of unit length. Colour
order and normalisation come from the class or from config, never from guessing at run time.

Flip fusion (``flip=True``) is the insightface evaluation convention: embed the crop and its
horizontal mirror and add the two raw (un-normalised) embeddings before the final L2 normalisation.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gandiff.face.onnx_models import ModelFileError, OnnxModel, check_model_file

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    dim: int

    def embed(self, aligned_batch: np.ndarray) -> np.ndarray: ...


def check_aligned_batch(aligned_batch: np.ndarray, size: int = 112) -> np.ndarray:
    """``(N, size, size, 3)`` uint8 (a single ``(size, size, 3)`` crop becomes N=1)."""
    a = np.asarray(aligned_batch)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1:] != (size, size, 3) or a.dtype != np.uint8:
        raise ValueError(f"embedder input must be (N, {size}, {size}, 3) uint8 RGB crops aligned with "
                         f"gandiff.face.align.align_face, got {a.shape} {a.dtype}")
    return a


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of two embeddings (or row-wise of two (N, D) arrays)."""
    a, b = np.atleast_2d(a).astype(np.float32), np.atleast_2d(b).astype(np.float32)
    s = (l2_normalize(a) * l2_normalize(b)).sum(1)
    return float(s[0]) if s.size == 1 else s


class _BatchedOnnxEmbedder:
    """Batching, flip fusion and normalisation around one ONNX recognizer."""

    model: OnnxModel
    flip: bool
    batch_size: int
    input_size: int = 112
    dim: int

    def _to_input(self, crops: np.ndarray) -> np.ndarray:  # (N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32
        raise NotImplementedError

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch_size):
            out.append(self.model.run(self._to_input(crops[start:start + self.batch_size]))[0].reshape(
                len(crops[start:start + self.batch_size]), -1))
        return np.concatenate(out).astype(np.float32)

    def embed(self, aligned_batch: np.ndarray) -> np.ndarray:
        crops = check_aligned_batch(aligned_batch, self.input_size)
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        feats = self._raw(crops)
        if self.flip:
            feats = feats + self._raw(np.ascontiguousarray(crops[:, :, ::-1]))
        return l2_normalize(feats)


class SFaceEmbedder(_BatchedOnnxEmbedder):
    """SFace (Zhong et al. 2021, "SFace: Sigmoid-Constrained Hypersphere Loss"), OpenCV Zoo
    ``face_recognition_sface_2021dec``: 128-d, MobileFaceNet-like, Apache-2.0.

    Input convention, from OpenCV's ``FaceRecognizerSF::feature``: ``blobFromImage(aligned_bgr,
    scalefactor=1, size=112x112, mean=0, swapRB=true)``, i.e. the network receives **RGB, 0..255,
    unnormalised, NCHW**; the ``(x - 127.5) * 0.0078125`` step is inside the graph (``Sub``/``Mul``
    nodes). The crop is OpenCV's ``alignCrop``: the same ArcFace template as ``align_face``.
    The published cosine threshold on LFW is 0.363 (conf/face/offline.yaml ``match_threshold``).
    """

    def __init__(self, model_path: str | os.PathLike, flip: bool = False, batch_size: int = 64,
                 device: str = "auto", config_key: str = "face.embedder.model_path"):
        self.model = OnnxModel(model_path, config_key, "SFace recognizer ONNX (OpenCV Zoo)", device=device,
                               dynamic_batch=True, input_hw=(112, 112), num_outputs=1)
        self.flip, self.batch_size = bool(flip), max(1, int(batch_size))
        self.dim = _output_dim(self.model, config_key)

    def _to_input(self, crops: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)  # RGB 0..255


class OnnxEmbedder(_BatchedOnnxEmbedder):
    """An ONNX recognizer in the insightface model-pack layout (``w600k_r50.onnx``, ``glintr100.onnx``,
    or an arcface_torch ``torch2onnx`` export): input ``(N, 3, 112, 112)``, output ``(N, dim)``.

    Normalisation is ``(x - mean) / std`` on **RGB** by default (insightface ``ArcFaceONNX`` uses
    ``blobFromImage(bgr, 1/std, mean, swapRB=True)``: RGB with mean 127.5, std 127.5 for these packs).
    ``input_bgr=True`` is for models trained on BGR. Both come from config, not guessed; insightface
    guesses mean 0 / std 1 for graphs that start with ``Sub``/``Mul``, which here is
    ``mean: 0, std: 1`` in the config.
    """

    def __init__(self, model_path: str | os.PathLike, mean: float | list[float] = 127.5,
                 std: float | list[float] = 127.5, flip: bool = False, input_bgr: bool = False,
                 batch_size: int = 64, input_size: int = 112, device: str = "auto",
                 config_key: str = "face.embedder.model_path"):
        self.input_size = int(input_size)
        self.model = OnnxModel(model_path, config_key, f"face recognizer ONNX (N, 3, {input_size}, {input_size}) "
                               "-> (N, dim)", device=device, dynamic_batch=True,
                               input_hw=(self.input_size, self.input_size), num_outputs=1)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if self.mean.size not in (1, 3) or self.std.size not in (1, 3) or (self.std == 0).any():
            raise ValueError(f"OnnxEmbedder mean={mean}, std={std}: need one value or three (per channel) and std != 0")
        self.flip, self.input_bgr, self.batch_size = bool(flip), bool(input_bgr), max(1, int(batch_size))
        self.dim = _output_dim(self.model, config_key)

    def _to_input(self, crops: np.ndarray) -> np.ndarray:
        x = crops[..., ::-1] if self.input_bgr else crops
        x = x.transpose(0, 3, 1, 2).astype(np.float32)  # (N, 3, S, S)
        return np.ascontiguousarray((x - self.mean) / self.std)


def _output_dim(model: OnnxModel, config_key: str) -> int:
    shape = model.session.get_outputs()[0].shape
    if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
        return int(shape[1])
    probe = model.run(np.zeros((1, 3, *model.input_shape[2:]), dtype=np.float32))[0]
    if probe.ndim != 2:
        raise ModelFileError(f"{config_key}={str(model.path)!r}: output has shape {probe.shape}; an embedder must "
                             "return (N, dim)")
    return int(probe.shape[1])


class TorchEmbedder:
    """A PyTorch recognizer (arcface_torch / MagFace IResNet, or any ``nn.Module``): ``(N, 3, S, S)`` -> ``(N, dim)``.

    ``module_or_factory``: an ``nn.Module`` or a zero-argument callable returning one (Hydra can pass
    ``_partial_`` of ``gandiff.recognition.backbones.iresnet50``). ``checkpoint``: a ``.pth`` state dict
    loaded with ``weights_only=True``; arcface_torch saves the bare backbone state dict; MagFace and
    Lightning checkpoints nest it under ``state_dict`` with a ``features.module.`` / ``backbone.`` /
    ``module.`` prefix, which is stripped (``strip_prefixes``). Keys must then match exactly.
    Input: RGB, ``(x / 255 - 0.5) / 0.5`` == ``(x - 127.5) / 127.5`` by default (arcface_torch training);
    MagFace trained on BGR with ``x / 255`` (``mean=0, std=255, input_bgr=True``).
    """

    def __init__(self, module_or_factory: Any, checkpoint: str | os.PathLike | None = None,
                 mean: float | list[float] = 127.5, std: float | list[float] = 127.5, flip: bool = False,
                 input_bgr: bool = False, device: str = "auto", batch_size: int = 64, input_size: int = 112,
                 strip_prefixes: tuple[str, ...] = ("features.module.", "module.", "backbone.", "model."),
                 config_key: str = "face.embedder.checkpoint"):
        import torch

        module = module_or_factory if isinstance(module_or_factory, torch.nn.Module) else module_or_factory()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchEmbedder: module_or_factory gave {type(module).__name__}, not a torch.nn.Module")
        if checkpoint is not None:
            path = check_model_file(checkpoint, config_key, "recognizer checkpoint (.pth state dict)")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ModelFileError(f"{config_key}={str(path)!r}: not a weights-only torch checkpoint "
                                     f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
            state = _unwrap_state_dict(state, tuple(strip_prefixes), set(module.state_dict()))
            missing, unexpected = module.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelFileError(f"{config_key}={str(path)!r}: does not match the module "
                                     f"({len(missing)} missing keys e.g. {missing[:3]}, {len(unexpected)} unexpected "
                                     f"e.g. {unexpected[:3]})")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.mean = torch.as_tensor(np.asarray(mean, np.float32).reshape(-1, 1, 1), device=self.device)
        self.std = torch.as_tensor(np.asarray(std, np.float32).reshape(-1, 1, 1), device=self.device)
        self.flip, self.input_bgr = bool(flip), bool(input_bgr)
        self.batch_size, self.input_size = max(1, int(batch_size)), int(input_size)
        with torch.inference_mode():
            probe = self.module(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
        if probe.ndim != 2:
            raise ValueError(f"TorchEmbedder: module returns shape {tuple(probe.shape)}; expected (N, dim)")
        self.dim = int(probe.shape[1])

    def _raw(self, crops: np.ndarray):
        import torch

        out = []
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[start:start + self.batch_size])).to(self.device)
            if self.input_bgr:
                x = x.flip(-1)
            x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std  # (B, 3, S, S)
            out.append(self.module(x).float())
        return torch.cat(out)

    def embed(self, aligned_batch: np.ndarray) -> np.ndarray:
        import torch

        crops = check_aligned_batch(aligned_batch, self.input_size)
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            feats = self._raw(crops)
            if self.flip:
                feats = feats + self._raw(crops[:, :, ::-1])
            feats = torch.nn.functional.normalize(feats, dim=1)
        return feats.cpu().numpy().astype(np.float32)


def _unwrap_state_dict(state: Any, prefixes: tuple[str, ...], wanted: set[str]) -> dict:
    """The backbone's tensors from a bare, MagFace-style or Lightning-style checkpoint."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelFileError(f"checkpoint holds a {type(state).__name__}, not a state dict")
    if set(state) & wanted:
        return state
    for prefix in prefixes:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if stripped and set(stripped) & wanted:
            return stripped
    return state
