"""Read NVlabs StyleGAN network pickles (``stylegan3-r-ffhq-1024x1024.pkl`` ...) without running their code.

What is inside such a pickle. ``training_loop.py`` pickles a dict ``{"G", "D", "G_ema", "augment_pipe",
"training_set_kwargs"}``. Every network module is an instance of a class decorated with
``torch_utils.persistence.persistent_class``, whose ``__reduce__`` emits

    torch_utils.persistence._reconstruct_persistent_obj(meta)
    meta = {"type": "class", "version": 6, "module_src": <the whole networks_*.py source, a str>,
            "class_name": "Generator", "state": <the module's __dict__>}

and the official loader ``exec``\\ s ``module_src`` to rebuild the class: loading an untrusted pickle runs
arbitrary code. ``state`` is an ``nn.Module.__dict__``: ``_parameters`` / ``_buffers`` / ``_modules``
(``collections.OrderedDict``), plain attributes (ints, floats, lists, NumPy arrays and scalars),
``_init_args`` / ``_init_kwargs`` (the constructor arguments, with ``dnnlib.util.EasyDict`` values), and
submodules that are persistent objects themselves. Tensors are pickled by ``torch._utils._rebuild_tensor_v2``
/ ``_rebuild_parameter`` over storages serialised by ``torch.storage._load_from_bytes`` (a legacy
``torch.save`` of the storage).

``RestrictedUnpickler`` resolves a fixed allow-list of globals, each mapped to a harmless stand-in:
``_reconstruct_persistent_obj`` -> a ``PersistentObject`` record holding ``class_name`` and ``state`` (the
source code is kept as an inert string and never compiled); ``_load_from_bytes`` -> ``torch.load(...,
weights_only=True)``; ``EasyDict`` -> ``dict``; NumPy array/scalar reconstruction with object dtypes
refused. Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class from the
pickled source ...) raises ``UnsafePickleError`` naming it, before anything is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gandiff.errors import UserError


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle asks for something outside the allow-list; nothing it names has been called."""


@dataclass
class PersistentObject:
    """An NVlabs persistent-class instance as data: its class name, its ``__dict__`` and its source text."""

    class_name: str
    state: dict[str, Any]
    version: int = 0
    module_src: str = field(default="", repr=False)  # inert: never compiled or executed

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return _plain(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    def submodule(self, name: str) -> PersistentObject:
        mods = self.state.get("_modules") or {}
        if name not in mods or not isinstance(mods[name], PersistentObject):
            raise KeyError(f"{self.class_name} has no persistent submodule {name!r} (has {sorted(mods)})")
        return mods[name]

    def tensors(self, prefix: str = "") -> dict[str, Any]:
        """Parameters and buffers of this module and its submodules, keyed like ``Module.state_dict()``."""
        import torch

        out: dict[str, Any] = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if v is None:
                    continue
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"{prefix}{k}: expected a tensor in {group}, found {type(v).__name__}")
                out[prefix + k] = v.detach()
        for k, m in (self.state.get("_modules") or {}).items():
            if m is None:
                continue
            if not isinstance(m, PersistentObject):
                raise ValueError(f"{prefix}{k}: submodule is not a persistent NVlabs object ({type(m).__name__})")
            out.update(m.tensors(prefix + k + "."))
        return out


def _plain(obj: Any) -> Any:
    """EasyDict / OrderedDict / tuple / NumPy scalar trees -> plain dicts, lists and Python numbers."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (attribute access is not needed)."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("torch_utils.persistence object with unexpected metadata "
                                f"(keys {sorted(meta) if isinstance(meta, dict) else type(meta).__name__})")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistent {meta['class_name']}: state is a {type(state).__name__}, expected a dict")
    src = meta.get("module_src", "")
    return PersistentObject(class_name=meta["class_name"], state=dict(state), version=int(meta.get("version", 0)),
                            module_src=src if isinstance(src, str) else "")


def _load_storage_from_bytes(b: bytes):
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (the original uses False)."""
    import torch

    if not isinstance(b, (bytes, bytearray)):
        raise UnsafePickleError(f"storage payload is a {type(b).__name__}, expected bytes")
    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


def _numpy_dtype(*args):
    import numpy as np

    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError(f"NumPy dtype {dt!r} holds Python objects: refused")
    return dt


def _numpy_reconstruct(subtype, shape, dtype):
    import numpy as np

    if subtype is not np.ndarray:
        raise UnsafePickleError(f"NumPy array subclass {subtype!r}: refused")
    return np.ndarray.__new__(np.ndarray, shape, _numpy_dtype(dtype))


def _numpy_scalar(dtype, data=None):
    import numpy as np

    dtype = _numpy_dtype(dtype)
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def _allowed() -> dict[tuple[str, str], Any]:
    import numpy as np
    import torch
    import torch._utils

    table: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numpy_dtype,
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        table[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = _numpy_reconstruct
        table[(mod, "scalar")] = _numpy_scalar
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see the module docstring)."""

    def __init__(self, file, source: str = "<pickle>"):
        super().__init__(file)
        self._source = source
        self._table = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        fn = self._table.get((module, name))
        if fn is None:
            raise UnsafePickleError(
                f"{self._source}: refuses to load global '{module}.{name}': only tensors, NumPy arrays, "
                "plain containers and NVlabs persistent network records are allowed in a StyleGAN pickle "
                "(nothing from this file has been executed; if you trust it, identity.impl=nvlabs runs NVlabs' "
                "own loader)")
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: unexpected persistent id {str(pid)[:80]!r} (not an NVlabs pickle)")


def load_nvlabs_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level dict of an NVlabs network pickle, networks as ``PersistentObject`` records."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such StyleGAN checkpoint")
    with open(path, "rb") as f:
        try:
            data = RestrictedUnpickler(f, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"{path}: not a readable NVlabs network pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is a {type(data).__name__}; NVlabs pickles hold a dict with 'G_ema' "
                         "(TensorFlow-era StyleGAN2 pickles must first be converted with NVlabs' legacy.py)")
    return data
