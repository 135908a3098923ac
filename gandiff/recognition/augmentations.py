"""Training-time augmentation of aligned faces, on uint8 tensors ``(3, H, W)`` in the loader workers.

Aligned faces are already centred and scaled, so geometry stays small: a horizontal flip (all arcface_torch
uses) and a few pixels of translation jitter. Photometric jitter, random erasing and RandAugment (Cubuk et al.
2020) are options for synthetic data, whose lighting and occlusion are narrower than real photos'. Each
sample's randomness is seeded from ``(seed, epoch, index)`` (``seeded_call``), not the worker's RNG, so an
epoch sees the same images whatever the number of workers and after a resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Transform = Callable[[torch.Tensor], torch.Tensor]


def build_train_transform(flip: bool = True, crop_jitter: int = 0, color_jitter: float = 0.0,
                          random_erasing: float = 0.0, randaugment: bool = False, randaugment_ops: int = 2,
                          randaugment_magnitude: int = 9, random_erasing_scale: Sequence[float] = (0.02, 0.2),
                          random_erasing_ratio: Sequence[float] = (0.3, 3.3), random_erasing_fill: int = 0,
                          crop_prob: float = 0.0, low_res_prob: float = 0.0,
                          photometric_prob: float = 0.0) -> Transform | None:
    """A uint8 (3, H, W) -> uint8 (3, H, W) transform, or None when every option is off.

    ``crop_prob`` / ``low_res_prob`` / ``photometric_prob``: AdaFace's Augmenter (the DataCV recipe's
    ``config.augment``), applied first as there (a flip commutes with each of them in distribution).
    """
    from torchvision.transforms import v2

    ops: list[Callable] = []
    if crop_prob > 0 or low_res_prob > 0 or photometric_prob > 0:
        ops.append(AdaFaceAugmenter(crop_prob, low_res_prob, photometric_prob))
    if flip:
        ops.append(v2.RandomHorizontalFlip(p=0.5))
    if crop_jitter > 0:
        ops.append(_CropJitter(crop_jitter))
    if randaugment:
        ops.append(v2.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude))
    if color_jitter > 0:
        s = color_jitter
        ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
    if random_erasing > 0:
        # After the photometric ops: the erased box stays a flat occluder. value=0 is black on uint8; torchvision's
        # RandomErasing() after Normalize(0.5, 0.5) (SOTA-FR / DataCV) fills 0.0 there, i.e. 127.5: use 128.
        ops.append(v2.RandomErasing(p=random_erasing, scale=tuple(random_erasing_scale),
                                    ratio=tuple(random_erasing_ratio), value=int(random_erasing_fill)))
    return v2.Compose(ops) if ops else None


class AdaFaceAugmenter(torch.nn.Module):
    """AdaFace's training augmenter (Kim et al., CVPR 2022; mk-minchul/AdaFace ``dataset/augmenter.py``, copied
    into HaiyuWu/iccv2025-fr-competition ``data/data_augmentor.py`` as ``Augmenter(0.3, 0.3, 0.3)``), on uint8
    (3, H, W) tensors, each part with its own probability, in its order:

    - crop: a RandomResizedCrop rectangle (scale 0.2-1, ratio 3/4-4/3) is kept where it is and everything
      outside it is set to 0 (not resized: the face stays aligned, part of it is cut away);
    - low resolution: resized to ``U(0.2, 1)`` of its side and back, each way with an interpolation drawn
      from nearest / linear / area / cubic / Lanczos (cv2, as there);
    - photometric: ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0), ops in random order.

    Draws come from torch's RNG, so ``seeded_call`` makes a sample's augmentation reproducible.
    """

    INTERPOLATIONS = ("INTER_NEAREST", "INTER_LINEAR", "INTER_AREA", "INTER_CUBIC", "INTER_LANCZOS4")

    def __init__(self, crop_prob: float = 0.3, low_res_prob: float = 0.3, photometric_prob: float = 0.3):
        super().__init__()
        from torchvision.transforms import v2

        self.crop_prob, self.low_res_prob, self.photometric_prob = crop_prob, low_res_prob, photometric_prob
        self.crop_scale, self.crop_ratio = (0.2, 1.0), (0.75, 4 / 3)  # AdaFace's RandomResizedCrop parameters
        self.photometric = v2.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (3, H, W) uint8
        if float(torch.rand(())) < self.crop_prob:
            i, j, h, w = _resized_crop_box(img, self.crop_scale, self.crop_ratio)
            out = torch.zeros_like(img)
            out[:, i:i + h, j:j + w] = img[:, i:i + h, j:j + w]
            img = out
        if float(torch.rand(())) < self.low_res_prob:
            img = self._low_res(img)
        if float(torch.rand(())) < self.photometric_prob:
            img = self.photometric(img)
        return img

    def _low_res(self, img: torch.Tensor) -> torch.Tensor:
        import cv2

        h, w = img.shape[-2:]
        side = int((0.2 + 0.8 * float(torch.rand(()))) * h)  # np.random.uniform(0.2, 1.0) * H, truncated
        down, up = (getattr(cv2, self.INTERPOLATIONS[int(k)]) for k in torch.randint(0, 5, (2,)))
        arr = img.permute(1, 2, 0).numpy()  # (H, W, 3)
        small = cv2.resize(arr, (max(side, 1), max(side, 1)), interpolation=down)
        back = cv2.resize(small, (w, h), interpolation=up)
        return torch.from_numpy(np.ascontiguousarray(back)).permute(2, 0, 1).contiguous()


def _resized_crop_box(img: torch.Tensor, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, left, height, width) as torchvision's ``RandomResizedCrop.get_params`` draws them (10 tries of
    area in ``scale`` x aspect in log-uniform ``ratio``, then a centre-crop fallback), from torch's RNG."""
    from torchvision.transforms import RandomResizedCrop

    return tuple(int(v) for v in RandomResizedCrop.get_params(img, list(scale), list(ratio)))


class _CropJitter(torch.nn.Module):
    """Pad by ``pixels`` (edge values, so no black border a network could learn) and crop back."""

    def __init__(self, pixels: int):
        super().__init__()
        self.pixels = pixels

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (3, H, W)
        p = self.pixels
        h, w = img.shape[-2:]
        padded = torch.nn.functional.pad(img[None].float(), (p, p, p, p), mode="replicate")[0].to(img.dtype)
        dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
        return padded[:, dy:dy + h, dx:dx + w]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (SplitMix-style mixing, so nearby inputs decorrelate)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    x ^= x >> 29
    return x & (2**63 - 1)


def seeded_call(transform: Transform, img: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(img)`` under its own seed, leaving the caller's global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(img)
