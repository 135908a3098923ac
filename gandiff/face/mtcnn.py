"""MTCNN: the P-Net / R-Net / O-Net cascade (Zhang et al. 2016, IEEE Signal Processing Letters 23(10)).

The networks carry the parameter names of the state dicts in the ``facenet-pytorch`` wheel, so those files
load with ``torch.load(weights_only=True)`` and ``strict=True`` (facenet-pytorch's code is not imported). The
cascade follows facenet-pytorch's ``detect_face`` number for number, except that candidate boxes reaching
outside the image are zero-padded as in the authors' code. Boxes use MTCNN's 1-based convention, landmarks
0-based in :data:`gandiff.face.types.LANDMARK_NAMES` order.

Design: docs/design.md#mtcnn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Normalisation the Caffe models were trained with: (x - 127.5) / 128.
MEAN, SCALE = 127.5, 0.0078125
# P-Net is a 12x12 detector slid with stride 2 (its one 2x2 max-pool).
CELL, STRIDE = 12, 2


class PNet(nn.Module):
    """Proposal net, fully convolutional: (B, 3, H, W) -> box offsets (B, 4, H', W'), face prob (B, 2, H', W')
    with ``H' = ceil((H - 2) / 2) - 4``; each output cell scores the 12x12 window at ``2 * (row, col)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)  # ceil_mode: Caffe's pooling rounds up
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)  # box offsets, in window sizes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement net: (B, 3, 24, 24) -> box offsets (B, 4), face prob (B, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))  # (B, 64, 3, 3)
        # The dense weights were converted from a (W, H, C)-ordered flatten (Caffe's transposed images).
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net: (B, 3, 48, 48) -> box offsets (B, 4), landmarks (B, 10) as x1..x5, y1..y5 in box units,
    face prob (B, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))  # (B, 128, 3, 3)
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


@dataclass
class MTCNNNets:
    pnet: PNet
    rnet: RNet
    onet: ONet


def pyramid_scales(height: int, width: int, minsize: float, factor: float) -> list[float]:
    """Image scales at which P-Net's 12-pixel window sees faces of ``minsize``, ``minsize / factor``, ...

    Scale ``12 / minsize`` first, then times ``factor`` while the shorter side still holds a 12 px window.
    """
    scales, scale = [], CELL / minsize
    shorter = min(height, width) * scale
    while shorter >= CELL:
        scales.append(scale)
        scale *= factor
        shorter *= factor
    return scales


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) * SCALE


def _proposals(pnet: PNet, images: torch.Tensor, scales: Sequence[float], threshold: float):
    """Stage 1 on same-sized images (B, 3, H, W) float 0..255: candidate rows ``[x1, y1, x2, y2, score,
    dx1, dy1, dx2, dy2]`` (K, 9) and the image index of each (K,), after per-scale NMS at IoU 0.5."""
    from torchvision.ops import batched_nms

    h, w = images.shape[2:]
    rows, owners = [], []
    for scale in scales:
        x = F.interpolate(images, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
        reg, prob = pnet(_normalise(x))  # (B, 4, h', w'), (B, 2, h', w')
        mask = prob[:, 1] >= threshold  # (B, h', w')
        where = mask.nonzero()  # (K, 3): image, row, col
        if not len(where):
            continue
        cell = where[:, 1:].flip(1).to(reg.dtype)  # (K, 2) as (x, y)
        # 1-based window corners in the original image, as MTCNN's MATLAB original computes them.
        top_left = torch.floor((STRIDE * cell + 1) / scale)
        bottom_right = torch.floor((STRIDE * cell + CELL) / scale)
        offsets = reg.permute(0, 2, 3, 1)[mask]  # (K, 4)
        found = torch.cat([top_left, bottom_right, prob[:, 1][mask][:, None], offsets], dim=1)
        keep = batched_nms(found[:, :4], found[:, 4], where[:, 0], 0.5)
        rows.append(found[keep])
        owners.append(where[keep, 0])
    if not rows:
        return images.new_zeros((0, 9)), torch.zeros(0, dtype=torch.long, device=images.device)
    return torch.cat(rows), torch.cat(owners)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each (x1, y1, x2, y2) grown to a square about its centre (side = the longer side)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply R-/O-Net offsets (in units of the inclusive box size ``x2 - x1 + 1``)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, :4] + offsets * torch.stack([w, h, w, h], dim=1)


def _crops(images: Sequence[torch.Tensor], boxes: torch.Tensor, owners: torch.Tensor, size: int):
    """Cut each box (1-based inclusive, truncated to int) from its image, zero-padded where it leaves the
    image, and resample to ``size x size``: (K, 3, size, size) 0..255. Also a keep-mask for boxes of
    positive size.

    Patches of equal size are resampled in one call (rerec makes them square, so sizes repeat): the same
    arithmetic as one call per patch, without a thousand tiny parallel regions.
    """
    patches, keep = [], []
    for (x1, y1, x2, y2), owner in zip(torch.trunc(boxes).long().tolist(), owners.tolist()):
        image = images[owner]  # (3, H, W)
        h, w = image.shape[1:]
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            keep.append(False)
            continue
        # 0-based half-open source rectangle, clipped to the image
        sx0, sy0, sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, w), min(y2, h)
        if sx0 == x1 - 1 and sy0 == y1 - 1 and sx1 == x2 and sy1 == y2:
            patch = image[:, sy0:sy1, sx0:sx1]
        else:
            patch = image.new_zeros((3, bh, bw))
            if sx1 > sx0 and sy1 > sy0:
                patch[:, sy0 - (y1 - 1):sy1 - (y1 - 1), sx0 - (x1 - 1):sx1 - (x1 - 1)] = image[:, sy0:sy1, sx0:sx1]
        patches.append(patch)
        keep.append(True)
    mask = torch.tensor(keep, dtype=torch.bool, device=boxes.device)
    out = boxes.new_zeros((len(patches), 3, size, size))
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, patch in enumerate(patches):
        by_shape.setdefault(tuple(patch.shape[1:]), []).append(i)
    for members in by_shape.values():
        batch = torch.stack([patches[i] for i in members])
        out[torch.as_tensor(members, device=out.device)] = F.interpolate(batch, size=(size, size), mode="area")
    return out, mask


def _run_batched(net: nn.Module, x: torch.Tensor, batch_size: int):
    outs = [net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """MTCNN's final NMS: overlap = intersection / smaller box area, inclusive pixel sizes (``+ 1``), as in
    the MATLAB original. Indices kept, highest score first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / np.minimum(areas[i], areas[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


@torch.inference_mode()
def detect_faces(nets: MTCNNNets, images: Sequence[np.ndarray], minsize: float = 20.0,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 device: torch.device | str = "cpu", net_batch_size: int = 512):
    """The three-stage cascade over ``images`` ((H, W, 3) uint8 RGB, any sizes).

    Returns, per image, ``boxes`` (K, 4), ``scores`` (K,), ``landmarks`` (K, 5, 2) as float32 numpy arrays
    in facenet-pytorch's coordinates (module doc), in NMS order (highest score first).
    Images of the same size share P-Net calls; R-Net and O-Net see the candidates of all images at once.
    """
    from torchvision.ops import batched_nms

    if not images:
        return []
    device = torch.device(device)
    # (3, H, W) float 0..255 each; np.require copies read-only arrays (torch warns on non-writable memory)
    tensors = [torch.from_numpy(np.require(im, requirements=("C", "W"))).to(device).permute(2, 0, 1).float()
               for im in images]

    # Stage 1: P-Net over the image pyramid, images of equal size batched together.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape[1:]), []).append(i)
    rows, owners = [], []
    for (h, w), members in groups.items():
        found, local = _proposals(nets.pnet, torch.stack([tensors[i] for i in members]),
                                  pyramid_scales(h, w, minsize, factor), thresholds[0])
        rows.append(found)
        owners.append(torch.as_tensor(members, device=device)[local])
    boxes, owner = torch.cat(rows), torch.cat(owners)
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
             for _ in images]
    if not len(boxes):
        return empty
    keep = batched_nms(boxes[:, :4], boxes[:, 4], owner, 0.7)  # across scales, per image
    boxes, owner = boxes[keep], owner[keep]
    # P-Net's offsets are in units of x2 - x1 (no + 1), as in the reference.
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = _square(boxes[:, :4] + boxes[:, 5:9] * torch.stack([w, h, w, h], dim=1))

    # Stage 2: R-Net on 24x24 crops of every candidate.
    x, ok = _crops(tensors, boxes, owner, 24)
    boxes, owner = boxes[ok], owner[ok]
    if not len(boxes):
        return empty
    reg, prob = _run_batched(nets.rnet, _normalise(x), net_batch_size)
    passed = prob[:, 1] > thresholds[1]
    boxes, owner, reg, score = boxes[passed], owner[passed], reg[passed], prob[passed, 1]
    keep = batched_nms(boxes, score, owner, 0.7)
    boxes = _square(_regress(boxes[keep], reg[keep]))
    owner = owner[keep]

    # Stage 3: O-Net on 48x48 crops: final score, box and five landmarks.
    x, ok = _crops(tensors, boxes, owner, 48)
    boxes, owner = boxes[ok], owner[ok]
    if not len(boxes):
        return empty
    reg, points, prob = _run_batched(nets.onet, _normalise(x), net_batch_size)
    passed = prob[:, 1] > thresholds[2]
    boxes, owner, reg, points, score = boxes[passed], owner[passed], reg[passed], points[passed], prob[passed, 1]
    # Landmarks are fractions of the (pre-regression) inclusive box, 0-based pixels.
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    lms = torch.stack([w * points[:, :5] + boxes[:, :1] - 1, h * points[:, 5:] + boxes[:, 1:2] - 1], dim=2)
    boxes = _regress(boxes, reg)

    boxes_np, score_np = boxes.cpu().numpy(), score.float().cpu().numpy()
    lms_np, owner_np = lms.float().cpu().numpy(), owner.cpu().numpy()
    out = []
    for i in range(len(images)):
        mine = np.nonzero(owner_np == i)[0]
        keep_i = mine[nms_min(boxes_np[mine], score_np[mine], 0.7)] if mine.size else mine
        out.append((boxes_np[keep_i].astype(np.float32), score_np[keep_i].astype(np.float32),
                    lms_np[keep_i].astype(np.float32)))
    return out


def load_nets(paths: dict[str, object], config_key: str, device: torch.device | str = "cpu") -> MTCNNNets:
    """P-, R- and O-Net from facenet-pytorch's state-dict files; ``paths`` maps ``pnet/rnet/onet`` to files.

    A missing file, a file that is not a weights-only state dict, or one whose tensors do not match the
    network raises ModelFileError naming ``<config_key>.<name>_path``.
    """
    from gandiff.face.onnx_models import ModelFileError, check_model_file, load_torch_weights

    nets = {}
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        key = f"{config_key}.{name}_path"
        what = f"MTCNN {name} state dict (facenet-pytorch data/{name}.pt)"
        path = check_model_file(paths[name], key, what)
        state = load_torch_weights(path, key, what)
        net = cls()
        if not isinstance(state, dict):
            raise ModelFileError(f"{key}={str(path)!r}: holds a {type(state).__name__}; expected the {what}")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:200]
            raise ModelFileError(f"{key}={str(path)!r}: tensors do not match {cls.__name__} ({detail})") from None
        nets[name] = net.to(device).eval()
    return MTCNNNets(**nets)

