"""Training-time augmentation of aligned faces, on uint8 tensors ``(3, H, W)`` in the loader workers.

Aligned faces are already centred and scaled by the 5-point similarity transform, so geometric
augmentation stays small: a horizontal flip (faces are roughly symmetric; arcface_torch uses only this)
and a few pixels of translation jitter (alignment noise). Photometric jitter, random erasing
(occlusion) and RandAugment (Cubuk et al., NeurIPS 2020) are options for synthetic data, whose
lighting and occlusion statistics are narrower than real photos'.

Each sample's randomness is seeded from ``(seed, epoch, index)`` (see ``seeded_call``), not from the
worker's RNG, so an epoch sees the same augmented images whatever the number of workers and after a
resume.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Transform = Callable[[torch.Tensor], torch.Tensor]


def build_train_transform(flip: bool = True, crop_jitter: int = 0, color_jitter: float = 0.0,
                          random_erasing: float = 0.0, randaugment: bool = False, randaugment_ops: int = 2,
                          randaugment_magnitude: int = 9) -> Transform | None:
    """A uint8 (3, H, W) -> uint8 (3, H, W) transform, or None when every option is off."""
    from torchvision.transforms import v2

    ops: list[Callable] = []
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
        # After the photometric ops: the erased box stays a flat occluder. value=0 is black on uint8.
        ops.append(v2.RandomErasing(p=random_erasing, scale=(0.02, 0.2), value=0))
    return v2.Compose(ops) if ops else None


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
