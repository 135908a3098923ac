"""Each setting is defined once: a conf/<group>/*.yaml file states only what differs from what it would get
anyway (the schema dataclass's default, merged with the group files it extends in its ``defaults`` list).

Exempt: ``???`` (a value the user must supply is stated where it is required), and files that declare
themselves a pinned recipe with a line starting ``# Pinned recipe:`` (a published recipe must not move when
the defaults do).

And the schema says what a default run uses: the option ``conf/config.yaml`` picks for a group (and the root
file's own values) sets nothing that disagrees with the schema's default, apart from a model slot
(``{_target_: ...}`` where the schema has None), a ``???`` and the keys in ``SCHEMA_EXCEPTIONS``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gandiff.config import CONF_DIR, Config, LoggerConfig, PathsConfig

PINNED = "# Pinned recipe:"
NOT_GROUPS = {"experiment", "hydra", "launcher"}  # _global_ packages, not one schema group
# Keys the default option may set to something else than the schema's default, and why.
SCHEMA_EXCEPTIONS = {
    "face.pack_dir": "??? in the schema so that a pack config's ??? survives the merge (gandiff/face/schema.py)",
    "benchmark.root": "??? in the schema so that a benchmark file's ??? survives the merge "
                      "(gandiff/evaluation/schema.py)",
    "prompts.families": "a mapping: Hydra merges a group file's mapping into the schema's, so the GANDiffFace "
                        "bank's families could not be left out by prompts=miniature or prompts=neutral",
    "dreambooth.class_nouns": "a mapping: Hydra merges a group file's mapping into the schema's, so an option "
                              "could not go back to class_noun alone",
}


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


def default_options(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """group -> the option ``conf/config.yaml``'s defaults list picks for it (schema groups only)."""
    out = {}
    for entry in OmegaConf.load(conf_dir / "config.yaml").get("defaults", []):
        if isinstance(entry, str) or not OmegaConf.is_dict(entry):
            continue
        for group, option in entry.items():
            if not str(group).startswith("override ") and "/" not in str(group) and group not in NOT_GROUPS:
                out[str(group)] = str(option)
    return out


def _value(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) and not node._is_none() \
        else node._value()


def _disagreeing(eff: Any, schema: Any, keys: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in effect, schema default) for each of ``keys`` of ``eff`` that differs from ``schema``."""
    out = []
    for key in keys:
        full, mine = f"{prefix}{key}", eff._get_node(key)
        theirs = schema._get_node(key) if key in schema.keys() else None  # `in schema` is False for ???
        if (theirs is not None and OmegaConf.is_dict(theirs) and not theirs._is_none() and OmegaConf.is_dict(mine)
                and dataclasses.is_dataclass(OmegaConf.get_type(theirs))):
            out += _disagreeing(mine, theirs, list(mine.keys()), f"{full}.")
            continue
        value, default = _value(mine), (None if theirs is None else _value(theirs))
        slot = default is None and isinstance(value, dict) and "_target_" in value
        if value != default and not OmegaConf.is_missing(eff, key) and not slot:
            out.append((full, value, default))
    return out


def schema_disagreements(conf_dir: Path = CONF_DIR, exceptions: dict[str, str] | None = None) -> list[str]:
    """One line for each value a default run takes from conf/ that disagrees with the schema's default."""
    exceptions = SCHEMA_EXCEPTIONS if exceptions is None else exceptions
    out: list[str] = []
    root = OmegaConf.load(conf_dir / "config.yaml")
    own = [k for k in root if k not in ("defaults", "hydra")]
    schema = OmegaConf.structured(Config)
    eff = OmegaConf.merge(schema, {k: OmegaConf.to_container(root, resolve=False)[k] for k in own})
    layers = [(conf_dir / "config.yaml", "", eff, schema, own)]
    for group, option in default_options(conf_dir).items():
        node = _inherited(conf_dir, group, [option])
        layers.append((conf_dir / group / f"{option}.yaml", f"{group}.", node, _schema(group), list(node.keys())))
    for path, prefix, node, base, keys in layers:
        where = OmegaConf.get_type(base).__module__.replace(".", "/") + ".py"
        for key, value, default in _disagreeing(node, base, keys, prefix):
            if key not in exceptions:
                out.append(f"{path.relative_to(conf_dir.parent)}: {key}={value!r} but the schema default is "
                           f"{default!r} ({where}): a default run uses the file's value; make it the schema "
                           f"default and delete the line, or list {key} in SCHEMA_EXCEPTIONS with why")
    return out


def test_schema_defaults_are_what_a_default_run_uses():
    wrong = schema_disagreements()
    assert not wrong, "\n".join(wrong)


def test_schema_exceptions_are_needed():
    """Each exception names a key whose default option still differs from the schema (else it is stale)."""
    found = schema_disagreements(exceptions={})
    stale = [k for k in SCHEMA_EXCEPTIONS if not any(line.split(": ", 1)[1].startswith(f"{k}=") for line in found)]
    assert not stale, f"SCHEMA_EXCEPTIONS entries that agree with the schema now (delete them): {stale}"


def test_schema_disagreement_is_found(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "face").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - gandiff_schema\n  - export: x\n  - face: f\n"
                                          "  - experiment: demo\n  - _self_\nseed: 3\nstage: run\n")
    (tmp_path / "export" / "base.yaml").write_text("jpeg_quality: 90\n")
    (tmp_path / "export" / "x.yaml").write_text("defaults:\n  - base\n  - _self_\nimage_size: 128\n"
                                                "shard_size: 1000\npublish_dir: ???\n")
    (tmp_path / "face" / "f.yaml").write_text("detector: {_target_: a.B, model_path: x.onnx}\npack_dir: null\n"
                                              "match_threshold: 0.5\n")
    found = schema_disagreements(tmp_path, exceptions={"face.pack_dir": "why"})
    assert [line.split(" but ")[0] for line in found] == [
        f"{tmp_path.name}/config.yaml: seed=3",
        f"{tmp_path.name}/export/x.yaml: export.image_size=128",
        f"{tmp_path.name}/export/x.yaml: export.jpeg_quality=90",  # from the file it builds on
        f"{tmp_path.name}/face/f.yaml: face.match_threshold=0.5",
    ]
    assert "the schema default is 112 (gandiff/datasets/schema.py)" in found[1]
    assert any("face.pack_dir=None" in line for line in schema_disagreements(tmp_path, exceptions={}))
