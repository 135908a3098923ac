"""Face-recognition backbones with insightface arcface_torch's exact parameter names and shapes.

Named as in arcface_torch's ``backbones/iresnet.py`` and ``mobilefacenet.py``, so published ``backbone.pth``
files and MagFace's IResNets (prefix stripped) load with ``strict=True``, and a ``backbone.pt`` saved here loads
into arcface_torch. Input ``(B, 3, 112, 112)`` float RGB, ``(x - 127.5) / 127.5``; output ``(B, D)``
un-normalised (the norm carries quality, which AdaFace uses). IResNet (Duta et al. 2020; insightface's ArcFace
variant): 3x3 stem, four stages of pre-activation basic blocks, BN -> FC -> BatchNorm1d.

Design: docs/design.md#backbones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018) as SOTA-Face-Recognition-Train-and-Test's ``model/iresnet.py``
    names it (``attn.fc1`` / ``attn.fc2``, bias-free 1x1 convs, reduction 16): ``x * sigmoid(fc2(relu(fc1(pool x))))``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IBasicBlock(nn.Module):
    """Pre-activation residual block; ``stride`` applies to the second conv (as in arcface_torch).

    ``se``: SOTA-FR's ``mode="se"`` (the DataCV recipe): an SE module on the *shortcut* (after ``downsample``),
    not on the residual branch, and only in each stage's first block (the later blocks are built without
    the mode there)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 se: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        if se:
            self.attn = SEModule(planes, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        if hasattr(self, "attn"):
            identity = self.attn(identity)
        return out + identity


class IResNet(nn.Module):
    """insightface IResNet. ``fp16``: arcface_torch's flag — the convolutional trunk runs under fp16
    autocast on CUDA and the embedding layer (fc + features) in float32. Whatever the flag, the embedding
    layer runs in float32 here, so an outer bf16 autocast (Lightning ``bf16-mixed``) does not round the
    embedding."""

    fc_scale = 7 * 7  # 112 / 2**4 = 7: the flattened map is 512 x 7 x 7

    def __init__(self, layers: Sequence[int], dropout: float = 0.0, num_features: int = 512,
                 fp16: bool = False, zero_init_residual: bool = False, se: bool = False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"IResNet layers={list(layers)}: expected 4 stage depths, e.g. (3, 4, 14, 3)")
        self.fp16 = fp16
        self.se = se
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        # arcface_torch freezes the final BN's scale at 1: the embedding scale is learnt by fc alone.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        # Every stage halves the resolution; its first block needs a projected shortcut.
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        mods = [IBasicBlock(self.inplanes, planes, 2, downsample, se=self.se)]
        self.inplanes = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 112, 112) -> (B, D)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.bn2(x)  # (B, 512, 7, 7)
            x = torch.flatten(x, 1)  # (B, 25088)
            x = self.dropout(x)
        with torch.autocast(x.device.type, enabled=False):
            x = self.features(self.fc(x.float()))  # (B, D)
        return x


# --------------------------------------------------------------------------------------------- MobileFaceNet


class ConvBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel: int | tuple = 1, stride: int | tuple = 1,
                 padding: int | tuple = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, groups=groups, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, kernel: int | tuple = 1, stride: int | tuple = 1,
                 padding: int | tuple = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``groups`` channels, depthwise 3x3, 1x1 linear projection."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, stride: int = 2, groups: int = 1):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, groups, kernel=1),
            ConvBlock(groups, groups, kernel=3, stride=stride, padding=1, groups=groups),
            LinearBlock(groups, out_c, kernel=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    def __init__(self, c: int, num_block: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, residual=True, stride=1, groups=groups)
                                      for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution over the 7x7 map, then the linear embedding and its BatchNorm."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=7, groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet (Chen et al., 2018) as arcface_torch's ``mbf``: ``blocks=(1, 4, 6, 2), scale=2``.

    ``scale`` multiplies the channel widths (64*scale, 128*scale); ``scale=1`` with ``blocks=(1, 2, 2, 1)``
    is a small variant for CPU demos (``mobilefacenet_small``).
    """

    def __init__(self, num_features: int = 512, blocks: Sequence[int] = (1, 4, 6, 2), scale: int = 2,
                 fp16: bool = False):
        super().__init__()
        self.fp16 = fp16
        c1, c2 = 64 * scale, 128 * scale
        first = (ConvBlock(c1, c1, kernel=3, stride=1, padding=1, groups=64) if blocks[0] == 1
                 else Residual(c1, blocks[0], groups=128))
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, kernel=3, stride=2, padding=1),  # 112 -> 56
            first,
            DepthWise(c1, c1, stride=2, groups=128),  # 56 -> 28
            Residual(c1, blocks[1], groups=128),
            DepthWise(c1, c2, stride=2, groups=256),  # 28 -> 14
            Residual(c2, blocks[2], groups=256),
            DepthWise(c2, c2, stride=2, groups=512),  # 14 -> 7
            Residual(c2, blocks[3], groups=256),
        ])
        self.conv_sep = ConvBlock(c2, 512, kernel=1)
        self.features = GDC(num_features)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 112, 112) -> (B, D)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            for layer in self.layers:
                x = layer(x)
        x = self.conv_sep(x.float() if self.fp16 else x)  # (B, 512, 7, 7)
        with torch.autocast(x.device.type, enabled=False):
            return self.features(x.float())  # (B, D)


# --------------------------------------------------------------------------------------------- factories
# One function per architecture (``_target_: gandiff.recognition.backbones.iresnet50`` in a Hydra config),
# and ``build_backbone(name, ...)`` for the recognizer config's ``backbone`` name.


def build_backbone(name: str, embedding_size: int = 512, dropout: float = 0.0, fp16: bool = False) -> nn.Module:
    """The backbone ``name`` (``iresnet18/34/50/100/200``, ``mobilefacenet``, ``mobilefacenet_small``)."""
    if name in IRESNET_LAYERS:
        return IResNet(IRESNET_LAYERS[name], dropout=dropout, num_features=embedding_size, fp16=fp16)
    if name.endswith("_se") and name[:-3] in IRESNET_LAYERS:  # SOTA-FR's SE-IResNet (mode="se")
        return IResNet(IRESNET_LAYERS[name[:-3]], dropout=dropout, num_features=embedding_size, fp16=fp16, se=True)
    if name == "mobilefacenet":
        return MobileFaceNet(embedding_size, blocks=(1, 4, 6, 2), scale=2, fp16=fp16)
    if name == "mobilefacenet_small":
        return MobileFaceNet(embedding_size, blocks=(1, 2, 2, 1), scale=1, fp16=fp16)
    choices = ", ".join([*IRESNET_LAYERS, "iresnet50_se", "mobilefacenet", "mobilefacenet_small"])
    raise ValueError(f"recognizer.backbone={name!r}: must be one of {choices}")


def iresnet18(embedding_size: int = 512, dropout: float = 0.0, fp16: bool = False) -> IResNet:
    return IResNet(IRESNET_LAYERS["iresnet18"], dropout, embedding_size, fp16)


def iresnet34(embedding_size: int = 512, dropout: float = 0.0, fp16: bool = False) -> IResNet:
    return IResNet(IRESNET_LAYERS["iresnet34"], dropout, embedding_size, fp16)


def iresnet50(embedding_size: int = 512, dropout: float = 0.0, fp16: bool = False) -> IResNet:
    return IResNet(IRESNET_LAYERS["iresnet50"], dropout, embedding_size, fp16)


def iresnet100(embedding_size: int = 512, dropout: float = 0.0, fp16: bool = False) -> IResNet:
    return IResNet(IRESNET_LAYERS["iresnet100"], dropout, embedding_size, fp16)


def iresnet200(embedding_size: int = 512, dropout: float = 0.0, fp16: bool = False) -> IResNet:
    return IResNet(IRESNET_LAYERS["iresnet200"], dropout, embedding_size, fp16)


def mobilefacenet(embedding_size: int = 512, fp16: bool = False) -> MobileFaceNet:
    return MobileFaceNet(embedding_size, blocks=(1, 4, 6, 2), scale=2, fp16=fp16)


def load_backbone_weights(backbone: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "") -> None:
    """Load an insightface-layout state dict with ``strict=True``.

    Accepts the prefixes other trainers add around the same layout: ``module.`` (DataParallel/DDP),
    ``backbone.`` (this package's Lightning checkpoints), ``features.module.`` (MagFace), ``_orig_mod.``
    (torch.compile). A mismatch names the missing and unexpected keys.
    """
    keys = list(state_dict)
    if any(k.startswith("features.module.") for k in keys):
        # MagFace: the backbone sits under features.module.; its classifier (fc.weight) is not ours.
        state_dict = {k[len("features.module."):]: v for k, v in state_dict.items() if k.startswith("features.module.")}
    clean = dict(state_dict)
    for p in ("module.", "backbone.", "_orig_mod."):
        if clean and all(k.startswith(p) for k in clean):
            clean = {k[len(p):]: v for k, v in clean.items()}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(clean))
    unexpected = sorted(set(clean) - set(own))
    bad_shape = [f"{k}: file {tuple(clean[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in clean and tuple(clean[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{source or 'state dict'}: does not match {type(backbone).__name__} "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; "
            f"shape mismatches: {bad_shape[:3]}). Is recognizer.backbone / embedding_size right?"
        )
    backbone.load_state_dict(clean, strict=True)
