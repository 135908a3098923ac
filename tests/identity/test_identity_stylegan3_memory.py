"""StyleGAN3's filtered leaky ReLU in bounded pieces: the same bits as one call, memory per image bounded."""

from __future__ import annotations

import pytest
import torch

from gandiff.identity import stylegan3
from .nvlabs_layout import TINY_SG3_R, TINY_SG3_T, tiny_generator


@pytest.mark.parametrize("kwargs", [TINY_SG3_T, TINY_SG3_R], ids=["T", "R"])
def test_pieces_give_the_same_bits_as_one_call(kwargs, monkeypatch, one_torch_thread):
    G = tiny_generator("stylegan3", kwargs)
    ws = G.mapping(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), None, truncation_psi=0.7)
    with torch.inference_mode():
        whole = G.synthesis(ws)
        monkeypatch.setattr(stylegan3, "FILTER_CHUNK_BYTES", 1)  # every layer in 2-channel pieces, image by image
        pieces = G.synthesis(ws)
    assert torch.equal(whole, pieces)


def test_piece_plan_bounds_the_temporary(monkeypatch):
    """At a 1024^2 layer's size (64 channels, ~2k^2 upsampled), no piece's temporary exceeds the budget."""
    calls = []

    def spy(x, **kw):
        calls.append(tuple(x.shape))
        return torch.zeros(x.shape[0], x.shape[1], 4, 4)  # the plan is the point here, not the values

    layer = stylegan3.SynthesisLayer(
        w_dim=8, is_torgb=False, is_critically_sampled=False, use_fp16=False, in_channels=4, out_channels=64,
        in_size=1044, out_size=1044, in_sampling_rate=1024, out_sampling_rate=1024, in_cutoff=400, out_cutoff=400,
        in_half_width=100, out_half_width=100, conv_kernel=1)
    monkeypatch.setattr(stylegan3, "filtered_lrelu", spy)
    x = torch.zeros(2, 64, 1044, 1044)
    layer._filtered_lrelu(x, 2 ** 0.5, 0.2)
    per_channel = (1044 * layer.up_factor + sum(layer.padding[2:])) * (1044 * layer.up_factor + sum(layer.padding[:2])) * 4
    assert calls and all(n == 1 and 2 <= c and c * per_channel <= 2 * stylegan3.FILTER_CHUNK_BYTES for n, c, _, _ in calls)
    assert sum(c for _, c, _, _ in calls) == 2 * 64
