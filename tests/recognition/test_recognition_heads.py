"""Margin heads against their closed forms; finite gradients at cos = +-1; insightface's boundary rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gandiff.recognition.heads import (
    AdaFaceHead,
    ArcFaceHead,
    CombinedMarginHead,
    CosFaceHead,
    arcface_target,
    build_head,
)

C, D, B = 7, 16, 12


def _head_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, D, generator=g) * 3
    labels = torch.randint(0, C, (B,), generator=g)
    return emb, labels


def _cos(head, emb):
    return (F.normalize(emb.double(), dim=1) @ F.normalize(head.weight.detach().double(), dim=1).t()).numpy()


def _expect(cos, labels, target_fn, s):
    out = cos.copy()
    for i, y in enumerate(labels.tolist()):
        out[i, y] = target_fn(cos[i, y], i)
    return s * out


def test_arcface_closed_form_including_the_fallback():
    head = ArcFaceHead(C, D, scale=64.0, margin=0.5)
    emb, labels = _head_inputs()
    emb[0] = -head.weight.detach()[labels[0]] * 100 + 0.05 * torch.randn(D)  # theta near pi: theta + m > pi
    cos = _cos(head, emb)

    def arc(c, _):
        theta = math.acos(c)
        return math.cos(theta + 0.5) if theta + 0.5 <= math.pi else c - 0.5 * math.sin(math.pi - 0.5)

    assert math.acos(cos[0, labels[0]]) + 0.5 > math.pi
    np.testing.assert_allclose(head(emb, labels).detach().numpy(), _expect(cos, labels, arc, 64.0), atol=2e-4)


def test_arcface_easy_margin_keeps_negative_cosines():
    c = torch.tensor([-0.3, 0.0, 0.4])
    out = arcface_target(c, 0.5, easy_margin=True)
    assert out[0] == c[0] and out[1] == c[1]
    assert out[2] == pytest.approx(math.cos(math.acos(0.4) + 0.5), abs=1e-6)


def test_cosface_closed_form():
    head = CosFaceHead(C, D, scale=30.0, margin=0.35)
    emb, labels = _head_inputs(1)
    cos = _cos(head, emb)
    np.testing.assert_allclose(head(emb, labels).detach().numpy(), _expect(cos, labels, lambda c, _: c - 0.35, 30.0),
                               atol=2e-4)


def test_combined_margin_closed_form_and_special_cases():
    emb, labels = _head_inputs(2)
    head = CombinedMarginHead(C, D, scale=64.0, m1=1.1, m2=0.2, m3=0.1)
    cos = _cos(head, emb)
    np.testing.assert_allclose(head(emb, labels).detach().numpy(),
                               _expect(cos, labels, lambda c, _: math.cos(1.1 * math.acos(c) + 0.2) - 0.1, 64.0),
                               atol=5e-4)
    # (1, m, 0) is ArcFace and (1, 0, m) CosFace, with the same centres.
    arc, cosf = ArcFaceHead(C, D, 64.0, 0.5), CosFaceHead(C, D, 64.0, 0.35)
    for other, ms in ((arc, (1.0, 0.5, 0.0)), (cosf, (1.0, 0.0, 0.35))):
        comb = CombinedMarginHead(C, D, 64.0, *ms)
        comb.weight.data.copy_(other.weight.data)
        torch.testing.assert_close(comb(emb, labels), other(emb, labels))


def test_adaface_closed_form_with_batch_statistics():
    """Kim et al. 2022, the authors' head.py: q from the EMA-standardised norm; cos(theta - m q) - (m + m q)."""
    m, h, a, s, eps = 0.4, 0.333, 0.5, 64.0, 1e-3
    head = AdaFaceHead(C, D, scale=s, margin=m, h=h, t_alpha=a).train()
    emb, labels = _head_inputs(3)
    emb = emb * torch.linspace(0.2, 3.0, B)[:, None]  # a spread of norms: some low, some high quality
    norms = emb.double().norm(dim=1).numpy()
    mean = a * norms.mean() + (1 - a) * 20.0
    std = a * norms.std(ddof=1) + (1 - a) * 100.0
    q = np.clip(h * (norms - mean) / (std + eps), -1, 1)
    cos = np.clip(_cos(head, emb), -1 + eps, 1 - eps)

    def ada(c, i):
        theta = np.clip(math.acos(c) - m * q[i], eps, math.pi - eps)
        return math.cos(theta) - (m + m * q[i])

    out = head(emb, labels).detach().numpy()
    np.testing.assert_allclose(out, _expect(cos, labels, ada, s), atol=5e-4)
    assert float(head.batch_mean) == pytest.approx(mean, rel=1e-5)
    assert float(head.batch_std) == pytest.approx(std, rel=1e-5)
    head.eval()  # no statistics update outside training
    head(emb, labels)
    assert float(head.batch_mean) == pytest.approx(mean, rel=1e-5)


def test_subcenter_cosine_is_the_max_over_centres():
    head = ArcFaceHead(C, D, 64.0, 0.5, subcenters=3)
    emb, labels = _head_inputs(4)
    full = _cos(head, emb).reshape(B, C, 3)
    np.testing.assert_allclose(head.cosine(emb).detach().numpy(), full.max(axis=2), atol=1e-5)
    assert head(emb, labels).shape == (B, C)


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "adaface"])
def test_gradients_finite_at_cos_plus_minus_one(name):
    head = build_head(name, num_classes=3, embedding_size=D, combined_margins=(1.2, 0.3, 0.1))
    w = head.weight.detach()
    # Row 0 exactly on its class centre (cos = 1), row 1 exactly opposite (cos = -1).
    emb = torch.stack([w[0] * 2.0, -w[1] * 2.0, w[2] + 0.1]).clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2])
    loss = F.cross_entropy(head(emb, labels), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_ignored_labels_get_no_margin():
    head = ArcFaceHead(C, D, 10.0, 0.5)
    emb, labels = _head_inputs(5)
    labels[:3] = -1
    out = head(emb, labels)
    torch.testing.assert_close(out[:3], head.cosine(emb)[:3] * 10.0)


def test_head_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 identities"):
        build_head("arcface", num_classes=1, embedding_size=8)
