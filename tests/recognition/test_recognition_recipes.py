"""The field's fixed training recipes as trainer / recognizer presets: composed values against their sources,
the schedules against the sources' rules, BN weight decay, the SE-IResNet layout, AdaFace's augmenter, and a
few CPU steps of ``gandiff train trainer=<preset>``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gandiff.config import compose, validate
from gandiff.recognition.module import lr_factor

# HaiyuWu/iccv2025-fr-competition configs/arcface_r50_default.py over configs/base.py (get_configs.get_config
# updates base with the job config), data/data_loader_train_lmdb.py (transforms; RandomErasing() defaults:
# torchvision p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3)), data/data_augmentor.py (Augmenter(0.3, 0.3, 0.3)),
# model/iresnet.py (IResNet dropout default 0.4; mode "se"), losses.py (ArcFace s=64.0).
DATACV = {"epochs": 26, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "margin": 0.5,
          "s": 64.0, "fp16": True, "reduce_lr": [12, 20, 24], "warmup_epoch": 0, "embedding_size": 512,
          "depth": "50", "mode": "se", "dropout": 0.4, "erase": (0.5, (0.02, 0.33), (0.3, 3.3)),
          "augmenter": (0.3, 0.3, 0.3)}
# deepinsight/insightface recognition/arcface_torch configs/ms1mv3_r50.py over configs/base.py, train_v2.py
# (CombinedMarginLoss(64, *margin_list); get_model(dropout=0.0); PolynomialLRWarmup(warmup_iters, total_iters)
# with lr_scheduler.py's default power=1.0; clip_grad_norm_(backbone, 5)), dataset.py (flip, Normalize 0.5).
ARCFACE_TORCH = {"num_epoch": 20, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                 "margin_list": (1.0, 0.5, 0.0), "s": 64.0, "fp16": True, "warmup_epoch": 0, "power": 1.0,
                 "embedding_size": 512, "network": "r50", "dropout": 0.0}


def _cfg(trainer: str, recognizer: str, *extra: str):
    return validate(compose(["logger=none", f"trainer={trainer}", f"recognizer={recognizer}", *extra]))


def test_datacv_preset_is_the_challenge_recipe():
    c = _cfg("datacv_r50", "datacv_se_r50")
    t, r, s = c.trainer, c.recognizer, DATACV
    assert (t.max_epochs, t.batch_size, t.learning_rate, t.momentum, t.weight_decay) == (
        s["epochs"], s["batch_size"], s["lr"], s["momentum"], s["weight_decay"])
    assert t.optimizer == "sgd" and t.schedule == "step" and t.lr_gamma == 0.1 and t.warmup_epochs == s["warmup_epoch"]
    assert [int(m) + 1 for m in t.lr_milestones] == s["reduce_lr"]  # 0-based epochs vs `epoch + 1 in reduce_lr`
    assert t.bn_weight_decay is False and t.gradient_clip_val == 5.0 and t.precision == "16-mixed"
    a = t.augment
    assert a.flip and (a.random_erasing, tuple(a.random_erasing_scale), tuple(a.random_erasing_ratio)) == s["erase"]
    assert (a.crop_prob, a.low_res_prob, a.photometric_prob) == s["augmenter"]
    assert a.random_erasing_fill == 128  # 0.0 after Normalize(0.5, 0.5) is 127.5
    assert not (a.crop_jitter or a.color_jitter or a.randaugment)
    assert r.backbone == "iresnet50_se" and r.dropout == s["dropout"] and r.fp16 is s["fp16"]
    assert (r.head, r.scale, r.margin, r.embedding_size) == ("arcface", s["s"], s["margin"], s["embedding_size"])
    assert t.heldout == "none"  # trained on every image


def test_arcface_torch_preset_is_ms1mv3_r50():
    c = _cfg("arcface_torch_r50", "arcface_torch_r50")
    t, r, s = c.trainer, c.recognizer, ARCFACE_TORCH
    assert (t.max_epochs, t.batch_size, t.learning_rate, t.momentum, t.weight_decay) == (
        s["num_epoch"], s["batch_size"], s["lr"], s["momentum"], s["weight_decay"])
    assert t.schedule == "poly" and t.poly_power == s["power"] and t.warmup_epochs == s["warmup_epoch"]
    assert t.bn_weight_decay is True and t.gradient_clip_val == 5.0 and t.precision == "16-mixed"
    assert t.augment.flip and t.augment.random_erasing == 0.0 and not (t.augment.crop_prob or t.augment.crop_jitter)
    m1, m2, m3 = s["margin_list"]
    assert r.backbone == "iresnet50" and r.head == "arcface" and (r.scale, r.margin) == (s["s"], m2)
    assert m1 == 1.0 and m3 == 0.0 and r.dropout == s["dropout"] and r.fp16 is s["fp16"]


def test_step_schedule_is_reduce_lr_at_epoch_starts():
    # SOTA-FR train.py: for epoch in range(epochs): if epoch + 1 in reduce_lr: lr /= 10 (before the epoch's steps)
    per_epoch, lr = 7, 0.1
    want = []
    for epoch in range(DATACV["epochs"]):
        if epoch + 1 in DATACV["reduce_lr"]:
            lr /= 10
        want += [lr] * per_epoch
    milestones = tuple(round((m - 1) * per_epoch) for m in DATACV["reduce_lr"])
    got = [0.1 * lr_factor(k, 0, per_epoch * 26, "step", milestones=milestones, gamma=0.1)
           for k in range(per_epoch * 26)]
    assert np.allclose(got, want, rtol=1e-12)


def test_poly_power_one_is_polynomial_lr_warmup_closed_form():
    # arcface_torch lr_scheduler.py PolynomialLRWarmup._get_closed_form_lr with warmup_iters=0:
    # base_lr * (1 - min(total, last_epoch) / total) ** power; step k trains at last_epoch = k.
    total, base = 50, 0.1
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, 0, total, "poly", 1.0))
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert np.allclose(seen, [base * (1 - min(total, k) / total) ** 1.0 for k in range(total)])


def test_bn_parameters_get_no_weight_decay_when_asked():
    from gandiff.recognition.backbones import build_backbone
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import RecognitionModule

    bb = build_backbone("mobilefacenet_small", embedding_size=16)
    head = build_head(name="arcface", num_classes=3, embedding_size=16)
    m = RecognitionModule(bb, head, bn_weight_decay=False)
    decay, no_decay = m.parameter_groups(5e-4, bn_weight_decay=False)
    bn = [p for mod in m.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
          for p in mod.parameters(recurse=False) if p.requires_grad]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in bn} and no_decay["weight_decay"] == 0.0
    assert decay["weight_decay"] == 5e-4 and any(p is head.weight for p in decay["params"])
    assert len(decay["params"]) + len(bn) == sum(p.requires_grad for p in m.parameters())
    assert len(m.parameter_groups(5e-4, True)) == 1


def test_se_iresnet_has_sota_fr_layout():
    from gandiff.recognition.backbones import build_backbone

    net = build_backbone("iresnet50_se", dropout=0.4)
    keys = [k for k in net.state_dict() if ".attn." in k]
    # Recorded from HaiyuWu/iccv2025-fr-competition model/iresnet.py iresnet("50", mode="se").state_dict():
    # 483 keys, SE only in each stage's first block.
    assert keys == [f"layer{i}.0.attn.fc{j}.weight" for i in range(1, 5) for j in (1, 2)]
    assert len(net.state_dict()) == 483
    assert tuple(net.state_dict()["layer3.0.attn.fc1.weight"].shape) == (16, 256, 1, 1)
    assert net.dropout.p == 0.4
    plain = build_backbone("iresnet50")
    assert set(plain.state_dict()) == set(net.state_dict()) - set(keys)


def test_adaface_augmenter_is_seeded_and_does_what_it_says():
    from gandiff.recognition.augmentations import AdaFaceAugmenter, build_train_transform, seeded_call

    img = torch.randint(1, 255, (3, 112, 112), dtype=torch.uint8)
    crop = AdaFaceAugmenter(1.0, 0.0, 0.0)
    out = seeded_call(crop, img, 5)
    assert torch.equal(out, seeded_call(crop, img, 5))
    kept = out != 0
    rows, cols = kept.any(0).any(1).nonzero().flatten(), kept.any(0).any(0).nonzero().flatten()
    box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    assert torch.equal(out[:, box[0], box[1]], img[:, box[0], box[1]])  # kept in place, not resized
    area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / 112 ** 2
    assert 0.2 - 1e-6 <= area <= 1.0 and int(kept.sum()) < kept.numel()
    low = seeded_call(AdaFaceAugmenter(0.0, 1.0, 0.0), img, 1)
    assert low.shape == img.shape and low.dtype == torch.uint8 and not torch.equal(low, img)
    t = build_train_transform(flip=False, random_erasing=1.0, random_erasing_scale=(0.3, 0.3),
                              random_erasing_ratio=(1.0, 1.0), random_erasing_fill=128)
    erased = seeded_call(t, img, 2)
    assert math.isclose(int((erased == 128).all(0).sum()), 0.3 * 112 ** 2, rel_tol=0.05)


@pytest.mark.parametrize("trainer", ["datacv_r50", "arcface_torch_r50"])
def test_gandiff_train_runs_the_preset_on_cpu(tmp_path, trainer):
    from gandiff.pipeline import run_stage

    from .test_recognition_stage import _fake_export

    # CPU: fp32 instead of fp16 (no fp16 autocast on CPU), a few steps, the demo's small network.
    cfg = compose([f"paths.root={tmp_path}", "logger=none", f"trainer={trainer}", "trainer.precision=32-true",
                   "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_workers=0", "trainer.max_steps=3",
                   "trainer.batch_size=8", "trainer.log_every_n_steps=1", "recognizer=demo"])
    _fake_export(cfg)
    out = run_stage(cfg, "train")
    assert out["status"] == "done" and out["training"] == "trained" and out["steps"] == 3
