"""Resampling and activation ops of StyleGAN2/3 in plain PyTorch (no custom CUDA kernels to compile).

They follow NVlabs' reference ("slow path") definitions, so networks built from them compute what the
official generator computes in float32: ``upfirdn2d`` (as ``scipy.signal.upfirdn`` per axis, the tests'
reference), ``bias_act``, StyleGAN3's ``filtered_lrelu`` and its Kaiser-windowed ``lowpass_filter``
(separable, or radially symmetric for config R). Filters are float32 ``(taps,)`` or ``(taps, taps)``
tensors; ``None`` is the identity.

Design: docs/design.md#stylegan-ops.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# name -> (function of (x, alpha), default alpha, default gain); StyleGAN's "def_gain" keeps the signal
# variance of a ReLU-like unit at 1 (He et al. 2015), which equalized learning rate relies on.
ACTIVATIONS = {
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def activation_gain(act: str) -> float:
    return ACTIVATIONS[act][2]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", alpha: float | None = None,
             gain: float | None = None, clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """``clamp(act(x + b) * gain)``; ``b`` broadcast along ``dim``; ``None`` alpha/gain = the activation's defaults."""
    if act not in ACTIVATIONS:
        raise ValueError(f"activation {act!r}: must be one of {', '.join(ACTIVATIONS)}")
    fn, def_alpha, def_gain = ACTIVATIONS[act]
    alpha = float(def_alpha if alpha is None else alpha)
    gain = float(def_gain if gain is None else gain)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = fn(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(taps, normalize: bool = True, gain: float = 1.0, separable: bool | None = None) -> torch.Tensor:
    """A FIR filter as StyleGAN prepares it: 1-D taps become their outer product unless long (>= 8 taps).

    ``[1, 3, 3, 1]`` -> the normalised 4x4 binomial StyleGAN2 resamples with.
    """
    f = torch.as_tensor(1.0 if taps is None else taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f * (gain ** (f.ndim / 2))


def _pads(padding) -> tuple[int, int, int, int]:
    """int | (x, y) | (x0, x1, y0, y1) -> (x0, x1, y0, y1)."""
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    p = [int(v) for v in padding]
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    if len(p) != 4:
        raise ValueError(f"padding {padding!r}: expected an int, [x, y] or [x0, x1, y0, y1]")
    return p[0], p[1], p[2], p[3]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding=0,
              flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample (zero insertion), pad/crop, FIR-filter, downsample each channel of ``x`` ``(N, C, H, W)``.

    Output ``(N, C, (H*up + py0 + py1 - fh + 1) / down, ...)``. ``flip_filter=False`` is a true
    convolution (the filter is flipped before ``conv2d``, which correlates); a 1-D ``f`` is applied along
    x then y, each pass with sqrt(gain).
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    px0, px1, py0, py1 = _pads(padding)
    if up > 1:  # insert up-1 zeros after every sample, in both directions
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        k = f[None, None].repeat(c, 1, 1)  # (C, 1, taps)
        x = F.conv2d(x, k.unsqueeze(2), groups=c)  # along x: (C, 1, 1, taps)
        x = F.conv2d(x, k.unsqueeze(3), groups=c)  # along y: (C, 1, taps, 1)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, H*up, W*up)`` with the filter centred (StyleGAN2's skip-image path)."""
    fw = f.shape[-1]
    p = [(fw + up - 1) // 2, (fw - up) // 2]
    return upfirdn2d(x, f, up=up, padding=[p[0], p[1], p[0], p[1]], gain=up * up)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, padding: int = 0,
                    groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """2-D convolution with optional 2x (or ``up``x) upsampling, padding applied once (StyleGAN2).

    ``up == 1``: plain ``conv2d`` (``flip_weight=True`` = correlation, PyTorch's convention).
    ``up > 1``: a strided transposed convolution followed by the FIR filter, the decomposition the
    official generator uses, so results agree to float rounding. ``w``: ``(O, I/groups, kh, kw)``.
    """
    out_ch, in_per_group, kh, kw = w.shape
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    px0 = px1 = py0 = py1 = int(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if kw == 1 and kh == 1 and up > 1:  # 1x1 conv: convolve first, then upsample (cheaper, same result)
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
    if up > 1:
        # conv_transpose2d correlates with the transposed kernel; flipping the request keeps it a
        # convolution or correlation as asked.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        if flip_weight:  # transposed conv flips the kernel itself; un-flip to keep correlation semantics
            wt = wt.flip([2, 3])
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = F.conv_transpose2d(x, wt, stride=up, padding=[pyt, pxt], groups=groups)
        return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2)
    if not flip_weight:
        w = w.flip([2, 3])
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, w, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return F.conv2d(x, w, groups=groups)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0, gain: float = math.sqrt(2),
                   slope: float = 0.2, clamp: float | None = None) -> torch.Tensor:
    """StyleGAN3's alias-free leaky ReLU on ``(N, C, H, W)``.

    The nonlinearity runs at ``up`` times the sampling rate so the harmonics it creates can be removed by
    the low-pass ``fd`` before decimation (Karras et al. 2021, Sec. 3.2, Fig. 2).
    """
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down)


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR (StyleGAN3 layer filters); ``None`` for a single tap (identity).

    Separable: ``scipy.signal.firwin`` taps ``(numtaps,)``. Radial (StyleGAN3-R's downsampling filter): a
    jinc ``J1(2 pi fc r) / (pi r)`` times the outer product of 1-D Kaiser windows, ``(numtaps, numtaps)``,
    normalised to unit DC gain.
    """
    import scipy.signal
    import scipy.special

    if numtaps < 1:
        raise ValueError(f"numtaps={numtaps}: must be >= 1")
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs),
                               dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)
