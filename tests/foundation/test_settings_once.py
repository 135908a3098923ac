"""Each setting is defined once: a conf/<group>/*.yaml file states only what differs from what it would get
anyway (the schema dataclass's default, merged with the group files it extends in its ``defaults`` list).

Exempt: ``???`` (a value the user must supply is stated where it is required), and files that declare
themselves a pinned recipe with a line starting ``# Pinned recipe:`` (a published recipe must not move when
the defaults do).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gandiff.config import CONF_DIR, Config, LoggerConfig, PathsConfig

PINNED = "# Pinned recipe:"
NOT_GROUPS = {"experiment", "hydra", "launcher"}  # _global_ packages, not one schema group


def _schema(group: str) -> Any:
    types = {f.name: f.default_factory for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING}
    types.update(paths=PathsConfig, logger=LoggerConfig)
    return OmegaConf.structured(types[group])


def _own(path: Path) -> tuple[Any, list[str]]:
    raw = OmegaConf.load(path)
    parents = [d for d in raw.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    return raw, parents


def _inherited(conf_dir: Path, group: str, parents: list[str]) -> Any:
    node = _schema(group)
    for p in parents:
        own, grand = _own(conf_dir / group / f"{p}.yaml")
        node = OmegaConf.merge(node, _inherited(conf_dir, group, grand), own)
    return node


def _restated(own: Any, base: Any, prefix: str = "") -> list[str]:
    out = []
    for key in own:
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(own, key) or base is None or not OmegaConf.is_dict(base) or key not in base:
            continue
        mine, theirs = own._get_node(key), base._get_node(key)
        if OmegaConf.is_dict(mine) and OmegaConf.is_dict(theirs) and not theirs._is_none() and len(mine):
            out += _restated(mine, theirs, f"{full}.")
            continue
        merged = OmegaConf.merge(base, {key: OmegaConf.to_container(own, resolve=False)[key]})
        if OmegaConf.to_container(merged, resolve=False)[key] == OmegaConf.to_container(base, resolve=False)[key]:
            out.append(full)
    return out


def restated_settings(conf_dir: Path = CONF_DIR) -> list[str]:
    """``conf/<group>/<file>.yaml: <key>`` for every value a group file states that it would get anyway."""
    out = []
    for path in sorted(conf_dir.glob("*/*.yaml")):
        group = path.parent.name
        if group in NOT_GROUPS or any(line.startswith(PINNED) for line in path.read_text().splitlines()):
            continue
        own, parents = _own(path)
        base = _inherited(conf_dir, group, parents)
        out += [f"{path.relative_to(conf_dir.parent)}: {group}.{k} restates its default "
                f"({'the schema' if not parents else 'schema + ' + ', '.join(parents)}): delete the line"
                for k in _restated(own, base)]
    return out


def test_no_group_file_restates_a_default():
    restated = restated_settings()
    assert not restated, "\n".join(restated)


def test_restated_default_is_found(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "x.yaml").write_text("image_size: 112\nshard_size: 16\n")
    (tmp_path / "export" / "y.yaml").write_text("defaults:\n  - x\n  - _self_\nshard_size: 16\njpeg_quality: 95\n")
    assert restated_settings(tmp_path) == [
        f"{tmp_path.name}/export/x.yaml: export.image_size restates its default (the schema): delete the line",
        f"{tmp_path.name}/export/y.yaml: export.shard_size restates its default (schema + x): delete the line",
        f"{tmp_path.name}/export/y.yaml: export.jpeg_quality restates its default (schema + x): delete the line",
    ]
