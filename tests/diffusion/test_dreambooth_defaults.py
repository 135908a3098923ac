"""DreamBooth's defaults against diffusers' train_dreambooth(_lora).py: learning rate per mode, LR schedules."""

from __future__ import annotations

import pytest
import torch
from .conftest import compose_run

from gandiff.config import compose
from gandiff.diffusion.schema import DEFAULT_LEARNING_RATES, LR_SCHEDULERS, dreambooth_learning_rate
from gandiff.pipeline import run_stage


def _lrs(make_scheduler, steps: int) -> list[float]:
    """The learning rate of each optimiser step, the scheduler stepped after each (diffusers' training loop)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name", LR_SCHEDULERS)
@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_schedules_are_diffusers_get_scheduler(name, warmup):
    from diffusers.optimization import get_scheduler

    from gandiff.diffusion.dreambooth import lr_lambda

    total = 20
    ref = _lrs(lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total), total + 3)
    ours = _lrs(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(name, warmup, total)), total + 3)
    assert ours == ref
    if name == "constant":
        assert set(ours) == {1e-3}  # diffusers' constant ignores the warm-up steps
    elif warmup:
        assert ours[0] == 0.0 and ours[1] == pytest.approx(1e-3 / warmup)  # warm-up is s / W


def test_the_module_schedules_as_diffusers():
    from diffusers.optimization import get_scheduler

    from gandiff.diffusion.dreambooth import DreamBoothModule, GroupNetworks
    from gandiff.diffusion.schema import DreamBoothConfig

    net = torch.nn.Linear(2, 2)
    settings = DreamBoothConfig(learning_rate=1e-3, lr_scheduler="constant_with_warmup", lr_warmup_steps=4, steps=12)
    module = DreamBoothModule(GroupNetworks(net, 1, list(net.parameters())), torch.ones(10), "epsilon", settings)
    conf = module.configure_optimizers()
    assert conf["lr_scheduler"]["interval"] == "step"
    ours = [conf["optimizer"].param_groups[0]["lr"]]
    for _ in range(11):
        conf["optimizer"].step()
        conf["lr_scheduler"]["scheduler"].step()
        ours.append(conf["optimizer"].param_groups[0]["lr"])
    assert ours == _lrs(lambda opt: get_scheduler("constant_with_warmup", opt, num_warmup_steps=4), 12)


def test_adamw_fused_is_torchs_fused_kernel_and_steps_as_the_loop():
    from gandiff.diffusion.dreambooth import DreamBoothModule, GroupNetworks
    from gandiff.diffusion.schema import DreamBoothConfig

    weights = {}
    for name in ("adamw", "adamw_fused"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 3))
        settings = DreamBoothConfig(learning_rate=1e-2, optimizer=name, weight_decay=1e-2)
        opt = DreamBoothModule(GroupNetworks(net, 1, list(net.parameters())), torch.ones(10), "epsilon",
                               settings).configure_optimizers()["optimizer"]
        assert isinstance(opt, torch.optim.AdamW) and bool(opt.defaults["fused"]) is (name == "adamw_fused")
        x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
        for _ in range(5):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        weights[name] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert torch.allclose(weights["adamw"], weights["adamw_fused"], atol=1e-6)  # the same update, up to rounding
    assert compose(["logger=none"]).dreambooth.optimizer == "adamw_fused"  # the demo
    assert compose(["logger=none", "dreambooth=sd15_lora"]).dreambooth.optimizer == "adamw"  # diffusers' loop


def test_each_mode_has_the_reference_learning_rate():
    # train_dreambooth.py's --learning_rate default (full fine-tune); the LoRA README's runs for LoRA.
    assert DEFAULT_LEARNING_RATES == {"full": 5e-6, "lora": 1e-4}
    for mode, lr in DEFAULT_LEARNING_RATES.items():
        cfg = compose(["logger=none", "dreambooth=sd15_lora", f"dreambooth.mode={mode}"])
        assert cfg.dreambooth.learning_rate is None
        assert dreambooth_learning_rate(cfg.dreambooth.mode, cfg.dreambooth.learning_rate) == lr
    assert dreambooth_learning_rate("full", 2e-5) == 2e-5
    # The demo states its own rate (a full fine-tune of the miniature model): the default change leaves it.
    demo = compose(["logger=none"])
    assert demo.dreambooth.mode == "full" and demo.dreambooth.learning_rate == 8e-4
    assert demo.dreambooth.lr_scheduler == "constant"


def test_bad_schedule_names_the_diffusers_choices():
    from gandiff.config import validate
    from gandiff.schema import ConfigError

    with pytest.raises(ConfigError, match="dreambooth.lr_scheduler='warmup'.*'constant_with_warmup'"):
        validate(compose(["logger=none", "dreambooth.lr_scheduler=warmup"]))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_the_stage_trains_at_the_mode_default(tmp_path, tiny_base, monkeypatch, mode):
    from gandiff.diffusion import dreambooth as db

    seen = []

    def capture(module):  # the optimizer the Trainer is about to step with
        seen.append(module)
        raise _Stop

    monkeypatch.setattr(db.DreamBoothModule, "configure_optimizers", capture)
    cfg = compose_run(tmp_path, tiny_base, "identity.num=1", f"dreambooth.mode={mode}", "dreambooth.prior_weight=0",
                      "dreambooth.learning_rate=null")
    run_stage(cfg, "identities")
    with pytest.raises(_Stop):
        run_stage(cfg, "dreambooth")
    assert seen[0].lr == DEFAULT_LEARNING_RATES[mode] and seen[0].settings.mode == mode
