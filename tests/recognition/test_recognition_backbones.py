"""Backbones: insightface arcface_torch parameter names and shapes, strict loading of published layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gandiff.recognition.backbones import IResNet, build_backbone, load_backbone_weights

REFERENCE = json.loads((Path(__file__).parent / "data" / "arcface_torch_state_dicts.json").read_text())


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["iresnet50", "mobilefacenet"])
def test_state_dict_matches_arcface_torch_exactly(name):
    """Every key, in order, with its shape: what a strict load of a published .pth checks."""
    model = build_backbone(name, embedding_size=512)
    ref = REFERENCE[name]
    assert list(_shapes(model).items()) == [(k, v) for k, v in ref["keys"].items()]
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"]


@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet100", "iresnet200"])
def test_other_depths_match_reference_counts(name):
    with torch.device("meta"):  # no memory, no init cost: shapes only
        model = build_backbone(name)
    assert len(model.state_dict()) == REFERENCE[name]["num_entries"]
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[name]["num_parameters"]


def test_published_iresnet50_facts():
    """Independent of the fixture: 43.59 M parameters, a frozen unit-scale final BatchNorm, 512x7x7 -> fc."""
    with torch.device("meta"):
        m = build_backbone("iresnet50")
    assert sum(p.numel() for p in m.parameters()) == 43_590_848
    assert m.features.weight.requires_grad is False
    assert tuple(m.fc.weight.shape) == (512, 512 * 7 * 7)
    assert tuple(m.layer3[13].conv2.weight.shape) == (256, 256, 3, 3)


@pytest.fixture(scope="module")
def small_iresnet() -> IResNet:
    torch.manual_seed(0)
    m = IResNet((1, 1, 1, 1), num_features=32).eval()
    for mod in m.modules():  # non-trivial running statistics, so a wrong load would show
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("wrap", ["plain", "ddp", "magface", "lightning"])
def test_loads_checkpoint_layouts_strictly(small_iresnet, tmp_path, wrap):
    sd = small_iresnet.state_dict()
    saved = {
        "plain": sd,  # arcface_torch backbone.pth
        "ddp": {f"module.{k}": v for k, v in sd.items()},
        "magface": {**{f"features.module.{k}": v for k, v in sd.items()}, "fc.weight": torch.zeros(10, 32)},
        "lightning": {f"backbone.{k}": v for k, v in sd.items()},
    }[wrap]
    torch.save(saved, tmp_path / "w.pth")
    fresh = IResNet((1, 1, 1, 1), num_features=32).eval()
    load_backbone_weights(fresh, torch.load(tmp_path / "w.pth", weights_only=True), "w.pth")
    x = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(fresh(x), small_iresnet(x))


def test_mismatched_checkpoint_names_the_problem(small_iresnet):
    sd = dict(small_iresnet.state_dict())
    sd.pop("fc.bias")
    with pytest.raises(ValueError, match=r"w\.pth.*1 missing.*fc\.bias"):
        load_backbone_weights(IResNet((1, 1, 1, 1), num_features=32), sd, "w.pth")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_backbone_weights(IResNet((1, 1, 1, 1), num_features=64), small_iresnet.state_dict(), "w.pth")


def test_forward_shapes_and_float32_embedding_under_autocast():
    m = build_backbone("mobilefacenet_small", embedding_size=128).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.shape == (2, 128) and y.dtype == torch.float32


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="recognizer.backbone='resnet9'.*iresnet50.*mobilefacenet"):
        build_backbone("resnet9")
