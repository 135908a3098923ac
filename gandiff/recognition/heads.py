"""Margin heads: class centres, cosine logits and the margin that makes face embeddings discriminative.

Every head holds ``weight`` (C*K, D) (K sub-centres per class), normalises embeddings and centres, and returns
``s * f(cos)`` (B, C) for a plain cross-entropy; only the target logit changes and labels of -1 get no margin.
ArcFace (Deng et al. 2019), CosFace (Wang et al. 2018), insightface's combined margin, AdaFace (Kim et al.
2022, after the authors' ``head.py``) and sub-centre ArcFace (Deng et al. 2020). The heads compute in float32
whatever the autocast state: margins near cos = 1 need the precision.

Design: docs/design.md#margin-heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_SQRT_EPS = 1e-9  # floor of 1 - cos^2 under the square root: keeps d sin / d cos finite at cos = +-1


def _sin_from_cos(cos: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((1.0 - cos * cos).clamp_min(_SQRT_EPS))


def arcface_target(cos_t: torch.Tensor, m: float, easy_margin: bool = False) -> torch.Tensor:
    """ArcFace's target logit before scaling, insightface's way. ``cos_t``: (N,) target cosines."""
    cos_tm = cos_t * math.cos(m) - _sin_from_cos(cos_t) * math.sin(m)  # cos(theta + m)
    if easy_margin:
        return torch.where(cos_t > 0, cos_tm, cos_t)
    # theta + m <= pi  <=>  cos(theta) >= cos(pi - m); beyond it, a monotone linear fallback.
    return torch.where(cos_t > math.cos(math.pi - m), cos_tm, cos_t - math.sin(math.pi - m) * m)


def cosface_target(cos_t: torch.Tensor, m: float) -> torch.Tensor:
    return cos_t - m


def combined_target(cos_t: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """``cos(m1*theta + m2) - m3`` (insightface's combined margin).

    With ``m1 == 1`` this is the ArcFace formula (and fallback) minus ``m3``. Otherwise ``theta`` comes
    from ``acos`` of a cosine clamped to +-(1 - 1e-6) (finite gradient), and where ``m1*theta + m2 > pi``
    the same linear fallback as ArcFace is used.
    """
    if m1 == 1.0:
        return (arcface_target(cos_t, m2) if m2 > 0 else cos_t) - m3
    theta = torch.acos(cos_t.clamp(-1 + 1e-6, 1 - 1e-6))
    angle = m1 * theta + m2
    fallback = cos_t - math.sin(math.pi - m2) * m2 - m3 if m2 > 0 else cos_t - m3
    return torch.where(angle <= math.pi, torch.cos(angle) - m3, fallback)


def _replace_target(cos: torch.Tensor, labels: torch.Tensor, new_target: torch.Tensor) -> torch.Tensor:
    """``cos`` (B, C) with each valid row's label column replaced by ``new_target`` (B,)."""
    valid = labels >= 0
    onehot = F.one_hot(labels.clamp_min(0), cos.shape[1]).bool() & valid[:, None]  # (B, C)
    return torch.where(onehot, new_target[:, None].to(cos.dtype), cos)


def _gather_target(cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return cos.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)  # (B,)


class MarginHead(nn.Module):
    """Class centres and cosine logits; subclasses define the target-logit margin."""

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, subcenters: int = 1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a margin head needs at least 2 identities")
        self.num_classes = num_classes
        self.subcenters = subcenters
        self.scale = float(scale)
        # (C*K, D); arcface_torch's PartialFC initialises its centres with N(0, 0.01).
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes * subcenters, embedding_size)))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) un-normalised embeddings -> (B, C) cosines in [-1, 1], float32."""
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()
            if self.subcenters > 1:
                cos = cos.view(cos.shape[0], self.num_classes, self.subcenters).amax(dim=2)
            return cos.clamp(-1.0, 1.0)

    def target(self, cos_t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D), (B,) int -> scaled logits (B, C) with the margin on each row's label."""
        cos = self.cosine(embeddings)
        with torch.autocast(embeddings.device.type, enabled=False):
            new_t = self.target(_gather_target(cos, labels), embeddings)
            return _replace_target(cos, labels, new_t) * self.scale


class ArcFaceHead(MarginHead):
    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, margin: float = 0.5,
                 easy_margin: bool = False, subcenters: int = 1):
        super().__init__(num_classes, embedding_size, scale, subcenters)
        self.margin, self.easy_margin = float(margin), easy_margin

    def target(self, cos_t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return arcface_target(cos_t, self.margin, self.easy_margin)


class CosFaceHead(MarginHead):
    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, margin: float = 0.35,
                 subcenters: int = 1):
        super().__init__(num_classes, embedding_size, scale, subcenters)
        self.margin = float(margin)

    def target(self, cos_t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return cosface_target(cos_t, self.margin)


class CombinedMarginHead(MarginHead):
    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, m1: float = 1.0,
                 m2: float = 0.3, m3: float = 0.2, subcenters: int = 1):
        super().__init__(num_classes, embedding_size, scale, subcenters)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def target(self, cos_t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return combined_target(cos_t, self.m1, self.m2, self.m3)


class AdaFaceHead(MarginHead):
    """AdaFace. ``batch_mean``/``batch_std`` are buffers (saved in checkpoints, so a resumed run continues
    the same EMA); they start at the authors' 20 and 100 and are updated in training mode only."""

    eps = 1e-3

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 64.0, margin: float = 0.4,
                 h: float = 0.333, t_alpha: float = 0.01):
        super().__init__(num_classes, embedding_size, scale, subcenters=1)
        self.margin, self.h, self.t_alpha = float(margin), float(h), float(t_alpha)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def margin_scaler(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) -> q (B,) in [-1, 1]: the standardised feature norm, a proxy of image quality."""
        norms = embeddings.detach().float().norm(dim=1).clamp(0.001, 100)  # (B,)
        if self.training and norms.numel() > 1:
            with torch.no_grad():
                a = self.t_alpha
                self.batch_mean.mul_(1 - a).add_(a * norms.mean())
                self.batch_std.mul_(1 - a).add_(a * norms.std())
        return (self.h * (norms - self.batch_mean) / (self.batch_std + self.eps)).clamp(-1, 1)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings).clamp(-1 + self.eps, 1 - self.eps)  # (B, C)
        with torch.autocast(embeddings.device.type, enabled=False):
            q = self.margin_scaler(embeddings)  # (B,)
            theta = torch.acos(_gather_target(cos, labels))  # (B,)
            # g_angular = -m*q (moves theta), g_additive = m + m*q (subtracted from the cosine).
            theta_m = (theta - self.margin * q).clamp(self.eps, math.pi - self.eps)
            new_t = torch.cos(theta_m) - (self.margin + self.margin * q)
            return _replace_target(cos, labels, new_t) * self.scale


def build_head(name: str, num_classes: int, embedding_size: int, scale: float = 64.0, margin: float = 0.5,
               combined_margins: tuple[float, float, float] = (1.0, 0.3, 0.2), easy_margin: bool = False,
               subcenters: int = 1, adaface_h: float = 0.333, adaface_t_alpha: float = 0.01) -> MarginHead:
    """The margin head ``name`` (``arcface``, ``cosface``, ``combined``, ``adaface``)."""
    if name == "arcface":
        return ArcFaceHead(num_classes, embedding_size, scale, margin, easy_margin, subcenters)
    if name == "cosface":
        return CosFaceHead(num_classes, embedding_size, scale, margin, subcenters)
    if name == "combined":
        m1, m2, m3 = combined_margins
        return CombinedMarginHead(num_classes, embedding_size, scale, m1, m2, m3, subcenters)
    if name == "adaface":
        if subcenters != 1:
            raise ValueError(f"recognizer.subcenters={subcenters}: AdaFace has one centre per class")
        return AdaFaceHead(num_classes, embedding_size, scale, margin, adaface_h, adaface_t_alpha)
    raise ValueError(f"recognizer.head={name!r}: must be arcface, cosface, combined or adaface")
