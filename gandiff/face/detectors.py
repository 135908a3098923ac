"""Face detectors returning boxes, scores and five landmarks (:class:`gandiff.face.types.Detection`).

One contract: ``detect(image)`` takes ``(H, W, 3)`` uint8 RGB and returns detections in its pixel
coordinates, highest score first; ``detect_batch`` gives the same per image (faster only).
``score_threshold`` / ``nms_threshold`` mean what they mean in the reference implementation,
``min_face_size`` and ``max_faces`` filter. ONNX models load once (CUDA when present) and letterbox each image
into ``input_size`` as insightface's SCRFD does, so differently sized images share one batch.

Design: docs/design.md#face-detectors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from gandiff.devices import torch_device
from gandiff.face.onnx_models import ModelFileError, OnnxModel
from gandiff.face.types import Detection

log = logging.getLogger(__name__)


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, image_rgb: np.ndarray) -> list[Detection]: ...

    def detect_batch(self, images_rgb: Sequence[np.ndarray]) -> list[list[Detection]]: ...


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, highest score first.

    ``boxes`` (K, 4) x1, y1, x2, y2; ``scores`` (K,). IoU on continuous coordinates (no +1 pixel).
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def letterbox(image: np.ndarray, size_wh: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize ``image`` to fit ``size_wh`` keeping its aspect ratio, top-left, black padding.

    Returns the ``(H, W, 3)`` canvas and the scale (canvas pixels per image pixel). Same rule as
    insightface ``SCRFD.detect`` (new size truncated to int).
    """
    import cv2

    w_in, h_in = size_wh
    h, w = image.shape[:2]
    if h / w > h_in / w_in:
        new_h, new_w = h_in, max(1, int(h_in / (h / w)))
    else:
        new_w, new_h = w_in, max(1, int(w_in * (h / w)))
    scale = new_h / h
    # INTER_AREA when shrinking a large photo avoids aliasing; insightface uses the default (linear).
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    canvas = np.zeros((h_in, w_in, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return canvas, scale


def _check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"detector input must be a non-empty (H, W, 3) uint8 RGB array, got {a.shape} {a.dtype}; "
                         "gandiff.face.images.read_image / to_rgb_uint8 convert files and other arrays")
    return a


def _finish(dets: list[Detection], min_face_size: float, max_faces: int) -> list[Detection]:
    dets = [d for d in dets if min(d.width, d.height) >= min_face_size]
    dets.sort(key=lambda d: -d.score)
    return dets[:max_faces] if max_faces > 0 else dets


class _LetterboxOnnxDetector:
    """Shared batching for ONNX detectors with a fixed network input size."""

    input_size: tuple[int, int]
    batch_size: int
    min_face_size: float
    max_faces: int
    batched: bool = True
    # onnxruntime on the CPU gets slower per image as the batch grows (640x640 activations outgrow the caches:
    # YuNet on 2 cores, 24 photos: 171 images/s one at a time, 140 in pairs, 88 in batches of 8), so CPU
    # sessions run chunks of at most this many images; GPU sessions take batch_size whole.
    max_cpu_batch: int = 1

    def _preprocess(self, canvases: np.ndarray) -> np.ndarray:  # (N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32
        raise NotImplementedError

    def _decode(self, outputs: list[np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> boxes (K, 4), scores (K,), landmarks (K, 5, 2) of one image, canvas coordinates, before NMS."""
        raise NotImplementedError

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    nms_threshold: float

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([image_rgb])[0]

    def detect_batch(self, images_rgb: Sequence[np.ndarray]) -> list[list[Detection]]:
        images = [_check_image(im) for im in images_rgb]
        results: list[list[Detection]] = []
        step = self.batch_size if self.batched else 1
        if self.model.providers[0] == "CPUExecutionProvider":
            step = max(1, min(step, self.max_cpu_batch))
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            boxed = [letterbox(im, self.input_size) for im in chunk]
            outputs = self._run(self._preprocess(np.stack([c for c, _ in boxed])))
            for i, (_, scale) in enumerate(boxed):
                boxes, scores, lms = self._decode(outputs, i)
                keep = nms(boxes, scores, self.nms_threshold) if len(scores) else np.zeros(0, np.int64)
                dets = [Detection(boxes[k] / scale, float(scores[k]), lms[k] / scale) for k in keep]
                results.append(_finish(dets, self.min_face_size, self.max_faces))
        return results


class YuNetDetector(_LetterboxOnnxDetector):
    """YuNet (Wu et al. 2023, libfacedetection; OpenCV Zoo ``face_detection_yunet_2023mar``), via onnxruntime.

    Reproduces OpenCV's ``FaceDetectorYN``: BGR input in 0..255 with no normalisation, strides 8/16/32,
    score ``sqrt(clip(cls) * clip(obj))``, box centre ``(grid + d) * stride`` and size ``exp(d) * stride``,
    landmarks ``(grid + d) * stride``, in the order right eye, left eye, nose, right and left mouth
    corner of the *subject*, which is LANDMARK_NAMES order (image left first). Differences from
    OpenCV: the image is letterboxed into ``input_size`` instead of run at its native size (so images
    batch and huge photos stay cheap; ``input_size=None`` runs each image at its own size, padded to a
    multiple of 32, as OpenCV does), and NMS uses float IoU instead of integer rectangles.
    """

    STRIDES = (8, 16, 32)
    OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32))

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 input_size: Sequence[int] | None = (640, 640), min_face_size: float = 0.0, max_faces: int = 0,
                 batch_size: int = 8, top_k: int = 5000, device: str = "auto",
                 config_key: str = "face.detector.model_path"):
        self.model = OnnxModel(model_path, config_key, "YuNet face detector ONNX (OpenCV Zoo)", device=device,
                               dynamic_spatial=True, output_names=self.OUTPUTS)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        if input_size is not None:
            w, h = (int(v) for v in input_size)
            if w <= 0 or h <= 0 or w % 32 or h % 32:
                raise ValueError(f"YuNetDetector input_size={list(input_size)}: width and height must be positive "
                                 "multiples of 32")
            self.input_size = (w, h)
        else:
            self.input_size = None
        self.min_face_size, self.max_faces = float(min_face_size), int(max_faces)
        self.batch_size, self.top_k = max(1, int(batch_size)), int(top_k)

    def detect_batch(self, images_rgb: Sequence[np.ndarray]) -> list[list[Detection]]:
        if self.input_size is not None:
            return super().detect_batch(images_rgb)
        results = []
        for image in images_rgb:  # native size: pad bottom/right to a multiple of 32, scale 1
            image = _check_image(image)
            h, w = image.shape[:2]
            canvas = np.zeros(((h + 31) // 32 * 32, (w + 31) // 32 * 32, 3), dtype=np.uint8)
            canvas[:h, :w] = image
            outputs = self._run(self._preprocess(canvas[None]))
            boxes, scores, lms = self._decode(outputs, 0)
            keep = nms(boxes, scores, self.nms_threshold) if len(scores) else np.zeros(0, np.int64)
            results.append(_finish([Detection(boxes[k], float(scores[k]), lms[k]) for k in keep],
                                   self.min_face_size, self.max_faces))
        return results

    def _preprocess(self, canvases: np.ndarray) -> np.ndarray:
        # OpenCV feeds its BGR Mat through blobFromImage(scale=1, mean=0, swapRB=false): BGR, 0..255.
        return np.ascontiguousarray(canvases[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self._hw = batch.shape[2:]
        return self.model.run(batch, self.OUTPUTS)

    def _decode(self, outputs, index):
        w = self._hw[1]
        boxes, scores, lms = [], [], []
        for level, stride in enumerate(self.STRIDES):
            cls = np.clip(outputs[level][index, :, 0], 0, 1)
            obj = np.clip(outputs[3 + level][index, :, 0], 0, 1)
            bbox = outputs[6 + level][index]  # (rows*cols, 4)
            kps = outputs[9 + level][index]  # (rows*cols, 10)
            score = np.sqrt(cls * obj)
            sel = np.nonzero(score >= self.score_threshold)[0]
            if not sel.size:
                continue
            cols = w // stride
            grid = np.stack([sel % cols, sel // cols], axis=1).astype(np.float32)  # (K, 2) x=c, y=r
            centre = (grid + bbox[sel, :2]) * stride
            size = np.exp(bbox[sel, 2:4]) * stride
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            lms.append((kps[sel].reshape(-1, 5, 2) + grid[:, None, :]) * stride)
            scores.append(score[sel])
        if not scores:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        boxes_a, scores_a, lms_a = np.concatenate(boxes), np.concatenate(scores), np.concatenate(lms)
        if len(scores_a) > self.top_k:  # OpenCV's topK caps what survives NMS; capping before is equivalent here
            top = np.argsort(-scores_a, kind="stable")[: self.top_k]
            boxes_a, scores_a, lms_a = boxes_a[top], scores_a[top], lms_a[top]
        return boxes_a, scores_a, lms_a


class SCRFDDetector(_LetterboxOnnxDetector):
    """SCRFD (Guo et al. 2021, "Sample and Computation Redistribution for Efficient Face Detection") in the
    insightface model-pack layout (``det_10g.onnx``, ``det_2.5g.onnx``, ``det_500m.onnx``).

    Input RGB, ``(x - 127.5) / 128`` (insightface ``SCRFD.input_mean/std``). Outputs, in graph order:
    scores, box distances and keypoint offsets per stride (8, 16, 32 with 2 anchors per cell for 9
    outputs; 8..128 with 1 anchor for 15). Each output is ``(cells*anchors, C)`` for batch-1 exports
    (then images run one at a time) or ``(N, cells*anchors, C)`` for batched exports. Decoding is
    insightface's: anchor centres ``(x, y) * stride``, box ``centre -/+ distance * stride``, keypoints
    ``centre + offset * stride``; NMS at ``nms_threshold`` (insightface: 0.4).
    """

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.5, nms_threshold: float = 0.4,
                 input_size: Sequence[int] = (640, 640), min_face_size: float = 0.0, max_faces: int = 0,
                 batch_size: int = 8, input_mean: float = 127.5, input_std: float = 128.0, device: str = "auto",
                 config_key: str = "face.detector.model_path"):
        what = "SCRFD face detector ONNX (insightface det_*.onnx with keypoints: 9 or 15 outputs)"
        self.model = OnnxModel(model_path, config_key, what, device=device, dynamic_batch=False, num_outputs=(9, 15))
        where = f"{config_key}={str(model_path)!r}"
        n_out = len(self.model.output_names)
        self.strides, self.num_anchors = ((8, 16, 32), 2) if n_out == 9 else ((8, 16, 32, 64, 128), 1)
        shapes = [o.shape for o in self.model.session.get_outputs()]
        ranks = {len(s) for s in shapes}
        if ranks not in ({2}, {3}):
            raise ModelFileError(f"{where}: output ranks {sorted(ranks)}; expected all 2 or all 3 ({what})")
        self.batched = ranks == {3}
        fixed = self.model.input_shape[2:]
        w, h = (int(v) for v in input_size)
        if all(isinstance(d, int) and d > 0 for d in fixed) and (h, w) != tuple(fixed):
            log.info("%s: model input is fixed at %sx%s; using that instead of input_size=%s", where, fixed[1],
                     fixed[0], list(input_size))
            w, h = fixed[1], fixed[0]
        if w % 32 or h % 32:
            raise ValueError(f"SCRFDDetector input_size={[w, h]}: width and height must be multiples of 32")
        self.input_size = (w, h)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.min_face_size, self.max_faces = float(min_face_size), int(max_faces)
        self.batch_size = max(1, int(batch_size))
        self.input_mean, self.input_std = float(input_mean), float(input_std)
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    def _preprocess(self, canvases: np.ndarray) -> np.ndarray:
        x = canvases.astype(np.float32).transpose(0, 3, 1, 2)  # RGB, as insightface's swapRB=True on BGR
        return np.ascontiguousarray((x - self.input_mean) / self.input_std)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.model.run(batch)

    def _anchor_centres(self, rows: int, cols: int, stride: int) -> np.ndarray:
        key = (rows, cols, stride)
        if key not in self._centres:
            ys, xs = np.mgrid[:rows, :cols]
            centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
            self._centres[key] = np.repeat(centres, self.num_anchors, axis=0)  # anchors of a cell are adjacent
        return self._centres[key]

    def _decode(self, outputs, index):
        w, h = self.input_size
        fmc = len(self.strides)
        boxes, scores, lms = [], [], []
        for level, stride in enumerate(self.strides):
            pick = (lambda a: a[index]) if self.batched else (lambda a: a)
            score = pick(outputs[level]).reshape(-1)
            dist = pick(outputs[level + fmc]).reshape(-1, 4) * stride
            kps = pick(outputs[level + 2 * fmc]).reshape(-1, 10) * stride
            centres = self._anchor_centres(h // stride, w // stride, stride)
            if len(centres) != len(score):
                raise ModelFileError(f"{self.model.config_key}={str(self.model.path)!r}: stride {stride} output has "
                                     f"{len(score)} rows, expected {len(centres)} for a {w}x{h} input; not an "
                                     "insightface SCRFD layout")
            sel = np.nonzero(score >= self.score_threshold)[0]
            c = centres[sel]
            boxes.append(np.concatenate([c - dist[sel, :2], c + dist[sel, 2:]], axis=1))
            lms.append(c[:, None, :] + kps[sel].reshape(-1, 5, 2))
            scores.append(score[sel])
        return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
                np.concatenate(lms).astype(np.float32))


class MTCNNDetector:
    """MTCNN (Zhang et al. 2016) with facenet-pytorch's shipped weights; the cascade is in :mod:`gandiff.face.mtcnn`.

    Defaults are facenet-pytorch's ``MTCNN``: ``minsize=20`` (the smallest face the image pyramid searches
    for, in pixels of the image the detector is run on; ``min_face_size`` is the toolkit-wide filter on the
    final boxes and is applied after it), ``thresholds=(0.6, 0.7, 0.7)`` for P-, R- and O-Net, pyramid
    ``factor=0.709``. The final O-Net probability is the detection score. Landmarks come out in
    LANDMARK_NAMES order already (MTCNN's left/right are as seen in the image).

    ``max_side``: images whose longer side is larger are resized down to it before detection (and the
    results scaled back), so a 50-megapixel photo costs what a 2048-pixel one does instead of gigabytes of
    P-Net activations; faces smaller than ``minsize * side / max_side`` are then not searched for.
    0 runs every image at full size, as facenet-pytorch does.
    ``batch_size`` images go through the cascade together (P-Net batches same-sized images; R-Net and
    O-Net batch the candidates of all of them); results do not depend on it. Runs on torch: ``device``
    ``auto`` picks CUDA when present.
    """

    def __init__(self, pnet_path: str | os.PathLike, rnet_path: str | os.PathLike, onet_path: str | os.PathLike,
                 minsize: float = 20.0, thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 min_face_size: float = 0.0, max_faces: int = 0, max_side: int = 2048, batch_size: int = 8,
                 device: str = "auto", config_key: str = "face.detector"):
        import torch

        from gandiff.face.mtcnn import load_nets

        thresholds = [float(t) for t in thresholds]
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"{config_key}.thresholds={thresholds}: need three probabilities in [0, 1] "
                             "(P-Net, R-Net, O-Net)")
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"{config_key}.factor={factor}: the pyramid scale step must be in (0, 1)")
        if float(minsize) < 12:
            raise ValueError(f"{config_key}.minsize={minsize}: must be >= 12 (P-Net's window is 12 pixels)")
        self.device = torch_device(device)
        self.nets = load_nets({"pnet": pnet_path, "rnet": rnet_path, "onet": onet_path}, config_key, self.device)
        self.minsize, self.thresholds, self.factor = float(minsize), tuple(thresholds), float(factor)
        self.min_face_size, self.max_faces = float(min_face_size), int(max_faces)
        self.max_side, self.batch_size = int(max_side), max(1, int(batch_size))

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([image_rgb])[0]

    def detect_batch(self, images_rgb: Sequence[np.ndarray]) -> list[list[Detection]]:
        import cv2

        from gandiff.face.mtcnn import detect_faces

        images = [_check_image(im) for im in images_rgb]
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            chunk, scales = [], []
            for im in images[start:start + self.batch_size]:
                side = max(im.shape[:2])
                scale = self.max_side / side if self.max_side and side > self.max_side else 1.0
                if scale < 1.0:
                    size = (max(1, round(im.shape[1] * scale)), max(1, round(im.shape[0] * scale)))
                    im = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
                chunk.append(im)
                scales.append(scale)
            found = detect_faces(self.nets, chunk, self.minsize, self.thresholds, self.factor, self.device)
            for (boxes, scores, lms), scale in zip(found, scales):
                dets = [Detection(b / scale, float(s), lm / scale) for b, s, lm in zip(boxes, scores, lms)]
                results.append(_finish(dets, self.min_face_size, self.max_faces))
        return results
