"""Read NVlabs StyleGAN network pickles (``stylegan3-r-ffhq-1024x1024.pkl`` ...) without running their code.

Their modules are ``persistent_class`` objects whose pickled form carries the whole ``networks_*.py`` source,
which the official loader executes: loading an untrusted pickle runs arbitrary code. ``RestrictedUnpickler``
resolves a fixed allow-list of globals to harmless stand-ins (the source stays an inert string; storages load
with ``weights_only=True``; every path to a NumPy object dtype is refused); any other global raises
``UnsafePickleError`` naming it, before anything is called.

Design: docs/design.md#reading-nvlabs-pickles-safely.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def _check_dtype(dt: Any) -> Any:
    """Refuse a dtype that holds Python objects, or whose flags were set by its pickled state (``BUILD`` calls
    ``dtype.__setstate__``, which takes the flags as given: ``|V8`` marked as holding objects makes an
    array's bytes read as object pointers). The flags must be those NumPy computes for the same layout."""
    if not isinstance(dt, np.dtype):
        raise UnsafePickleError(f"NumPy array with dtype {type(dt).__name__}: refused")
    try:
        canonical = np.dtype(dt.descr) if dt.names is not None else np.dtype(dt.str)
    except (TypeError, ValueError):
        raise UnsafePickleError(f"NumPy dtype {dt!r}: not a plain dtype: refused") from None
    aligned = 0x80  # NPY_ALIGNED_STRUCT: kept by align=True structs, not by their descr
    if dt.hasobject or canonical.hasobject or (dt.flags & ~aligned) != (canonical.flags & ~aligned):
        raise UnsafePickleError(f"NumPy dtype {dt!r} holds Python objects (flags {dt.flags:#x}): refused")
    return dt


def _numpy_dtype(*args):
    return _check_dtype(np.dtype(*args))


class _NdarrayName:
    """What the global ``numpy.ndarray`` resolves to: the marker ``_reconstruct`` expects as its first
    argument. Calling it (``numpy.ndarray(shape, "O")``, a path to an object array) is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("numpy.ndarray called directly: refused (NumPy pickles arrays through "
                                "_reconstruct; a direct call could build an object array)")


_NDARRAY = _NdarrayName()


class CheckedArray(np.ndarray):
    """What ``_reconstruct`` builds: an ndarray whose ``__setstate__`` (pickle's ``BUILD``) checks the dtype
    and the payload before NumPy sees them."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError(f"NumPy array state of type {type(state).__name__}: refused")
        _check_dtype(state[2])
        if not isinstance(state[4], (bytes, bytearray)):  # object arrays pickle a list of objects
            raise UnsafePickleError("NumPy array pickled as a list of Python objects: refused")
        super().__setstate__(state)


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"NumPy array subclass {subtype!r}: refused")
    return np.ndarray.__new__(CheckedArray, shape, _numpy_dtype(dtype))


def _numpy_scalar(dtype, data=None):
    dtype = _check_dtype(dtype)
    if data is not None and not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"NumPy scalar payload of type {type(data).__name__}: refused")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a NumPy array, dtype or scalar pickle names, mapped to the checked stand-ins above (also
    what the verification ``.bin`` reader resolves)."""
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _numpy_dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = _numpy_reconstruct
        table[(mod, "scalar")] = _numpy_scalar
    return table


def _allowed() -> dict[tuple[str, str], Any]:
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
        **numpy_globals(),
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        table[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
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
