"""Tiny StyleGAN2/3 generators and a writer of NVlabs-layout network pickles, for the identity tests."""

from __future__ import annotations

import torch

TINY_SG2 = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                conv_clamp=256, mapping_kwargs=dict(num_layers=2))
TINY_SG3_T = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=16,
                  num_layers=4, num_critical=2, margin_size=2, conv_clamp=256, mapping_kwargs=dict(num_layers=2))
TINY_SG3_R = dict(TINY_SG3_T, conv_kernel=1, use_radial_filters=True)

# What NVlabs pickles as ``module_src``: the networks file's text. Ours would leave a trace if executed.
EVIL_SRC = "import pathlib\npathlib.Path({marker!r}).write_text('executed')\nclass Generator: pass\n"


def tiny_generator(arch: str, kwargs: dict, seed: int = 0):
    from gandiff.identity.stylegan import build_generator

    torch.manual_seed(seed)
    G = build_generator(arch, kwargs)
    with torch.no_grad():  # non-zero noise strengths and w_avg, so const noise and truncation matter
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping.w_avg.normal_()
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.fill_(1.7)
    return G


def nvlabs_pickle_bytes(G, module_src: str = "# networks source\n", extra: dict | None = None) -> bytes:
    """``G`` in the NVlabs snapshot layout: the same writer the rehearsal's stand-ins use."""
    from gandiff.rehearsal import nvlabs_pickle_bytes as write

    return write(G, module_src=module_src, extra=extra)
