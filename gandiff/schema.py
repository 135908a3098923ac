"""Helpers for the structured-config schemas (dataclasses registered in Hydra's ConfigStore).

Each config group's schema lives beside the code it configures (``gandiff/<concern>/schema.py``);
``gandiff.config`` assembles them. Type errors and unknown keys are caught by OmegaConf when Hydra
composes; value rules are checked in ``__post_init__`` (run by ``OmegaConf.to_object``), and every
message names the full key, the bad value and what would be right.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from gandiff.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value that breaks a rule; the message is one line meant for the user."""


def plain(node: Any, key: str | None = None) -> Any:
    """Plain Python values (dicts, lists, scalars) for a config node, interpolations resolved.

    ``node`` is an OmegaConf node (``key``, dotted, selects inside it; ``???`` there raises) or a typed
    settings dataclass (``ctx.settings.identity``); anything else comes back as it is.
    """
    from omegaconf import OmegaConf

    if key is not None:
        node = OmegaConf.select(node, key, throw_on_missing=True)
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return dataclasses.asdict(node)
    return node


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """``require(n >= 1, "identity.num", n, "must be >= 1")`` -> ``identity.num=-3: must be >= 1``."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {rule}")


def require_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(value in choices, key, value, f"must be one of {', '.join(map(repr, choices))}")


def require_range(key: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if lo is not None and hi is not None:
        require(lo <= value <= hi, key, value, f"must be in [{lo}, {hi}]")
    elif lo is not None:
        require(value >= lo, key, value, f"must be >= {lo}")
    elif hi is not None:
        require(value <= hi, key, value, f"must be <= {hi}")


def require_target(key: str, value: Any) -> None:
    """A model slot: a mapping with ``_target_`` (what Hydra instantiates), or None where optional."""
    if value is None:
        return
    ok = hasattr(value, "get") and isinstance(value.get("_target_"), str)
    require(ok, key, value, "must be a mapping with a '_target_' (a class or factory path) and its arguments")
