"""Tiny StyleGAN2/3 generators and a writer of NVlabs-layout network pickles, for the identity tests."""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
import types

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


@contextlib.contextmanager
def fake_nvlabs_modules():
    """``torch_utils.persistence`` and ``dnnlib.util`` as pickle sees them when NVlabs writes a snapshot.

    Only their names matter to the pickle stream; the reconstruct function fails loudly if anything calls it.
    """
    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never run
        raise AssertionError("the loader called NVlabs' reconstruct function")

    class EasyDict(dict):
        pass

    tu = types.ModuleType("torch_utils")
    tp = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    tp._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu.persistence = tp
    dn = types.ModuleType("dnnlib")
    du = types.ModuleType("dnnlib.util")
    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    du.EasyDict = EasyDict
    dn.util = du
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    sys.modules.update({"torch_utils": tu, "torch_utils.persistence": tp, "dnnlib": dn, "dnnlib.util": du})
    try:
        yield tp._reconstruct_persistent_obj, EasyDict
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _easy(obj, EasyDict):
    if isinstance(obj, dict):
        return EasyDict({k: _easy(v, EasyDict) for k, v in obj.items()})
    return obj


def nvlabs_pickle_bytes(G, module_src: str = "# networks source\n", extra: dict | None = None) -> bytes:
    """Pickle ``G`` the way ``torch_utils.persistence`` does: every module becomes
    ``_reconstruct_persistent_obj({"type": "class", "version": 6, "module_src", "class_name", "state"})`` with
    ``state`` its ``__dict__`` plus ``_init_args`` / ``_init_kwargs`` (EasyDicts, as ``train.py`` passes them)."""
    with fake_nvlabs_modules() as (reconstruct, EasyDict):
        class Pickler(pickle.Pickler):
            def reducer_override(self, obj):
                if isinstance(obj, torch.nn.Module):
                    state = dict(obj.__dict__)
                    state.pop("init_kwargs", None)
                    kwargs = getattr(obj, "init_kwargs", None) if obj is G else {}
                    state["_init_args"] = ()
                    state["_init_kwargs"] = _easy(dict(kwargs or {}), EasyDict)
                    meta = dict(type="class", version=6, module_src=module_src, class_name=type(obj).__name__,
                                state=state)
                    return reconstruct, (meta,)
                return NotImplemented

        snapshot = {"G": G, "D": None, "G_ema": G, "augment_pipe": None,
                    "training_set_kwargs": EasyDict(resolution=G.img_resolution, use_labels=False)}
        snapshot.update(extra or {})
        buf = io.BytesIO()
        Pickler(buf, protocol=4).dump(snapshot)
        return buf.getvalue()
