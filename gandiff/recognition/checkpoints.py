"""What training leaves behind, in the formats other tools read.

- ``backbone.pt``: the bare backbone ``state_dict`` (float32, CPU), insightface arcface_torch's layout
  (its ``model.pt``/``backbone.pth``): ``get_model("r50").load_state_dict(torch.load(...))`` loads it.
- ``backbone.onnx``: input ``data`` (N, 3, 112, 112) float32, RGB, ``(x - 127.5) / 127.5``; output
  ``embedding`` (N, D), not normalised; batch dimension dynamic. The layout of arcface_torch's
  ``torch2onnx.py`` and insightface's model packs, so ``gandiff.face.embedders.OnnxEmbedder`` (and
  insightface's ``ArcFaceONNX``) read it with their defaults.
- Lightning checkpoints (``checkpoints/*.ckpt``): everything needed to resume exactly; hyper-parameters
  are plain types, so they load with ``torch.load(weights_only=True)`` (no code runs on load).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandiff.artifacts import atomic_path, atomic_torch_save

log = logging.getLogger(__name__)

ONNX_INPUT = "data"
ONNX_OUTPUT = "embedding"


def read_checkpoint(path: str | os.PathLike, config_key: str = "checkpoint") -> dict[str, Any]:
    """A Lightning checkpoint or a bare state dict, loaded without running pickled code (a bad file: one line
    naming it and ``config_key``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    from gandiff.face.onnx_models import load_torch_weights

    return load_torch_weights(path, config_key, "Lightning checkpoint or bare state dict of plain types")


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict as arcface_torch saves it: float32 CPU tensors, insightface key names."""
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
            for k, v in backbone.state_dict().items()}


def save_backbone(backbone: nn.Module, path: str | os.PathLike) -> Path:
    return atomic_torch_save(path, backbone_state_dict(backbone))


def export_onnx(backbone: nn.Module, path: str | os.PathLike, opset: int = 17, image_size: int = 112) -> Path:
    """Export a float32 CPU copy of ``backbone`` in eval mode (BatchNorm uses its running statistics)."""
    import copy

    import onnx

    model = copy.deepcopy(backbone).to("cpu", torch.float32).eval()
    model.to(memory_format=torch.contiguous_format)
    model._compiled_call_impl = None  # nn.Module.compile() state: export the plain forward
    if hasattr(model, "fp16"):
        model.fp16 = False  # no autocast in the exported graph
    dummy = torch.zeros(1, 3, image_size, image_size)
    with atomic_path(path) as tmp:
        # The TorchScript exporter (dynamo=False): no onnxscript dependency, and one self-contained file.
        torch.onnx.export(model, (dummy,), str(tmp), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
        onnx.checker.check_model(str(tmp))
    return Path(path)


def load_recognizer(path: str | os.PathLike) -> Any:
    """Rebuild a ``RecognitionModule`` from one of its Lightning checkpoints (weights_only load)."""
    from gandiff.recognition.backbones import build_backbone
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import RecognitionModule

    ckpt = read_checkpoint(path)
    hp = dict(ckpt.get("hyper_parameters") or {})
    if "backbone_spec" not in hp or "head_spec" not in hp:
        raise ValueError(f"{path}: not a gandiff recognizer checkpoint (no backbone_spec/head_spec hyper-parameters)")
    backbone = build_backbone(**hp["backbone_spec"])
    head = build_head(**hp["head_spec"])
    module = RecognitionModule(backbone, head, **hp)
    module.load_state_dict(ckpt["state_dict"], strict=True)
    return module
