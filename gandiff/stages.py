"""The stage registry: every stage by name, in run order, as the ``module:Class`` that defines it.

A stage's class declares the rest (``name``, ``upstream``, ``config_keys``, its ``--help`` example); this table
only says where each class lives and when it runs, and copies each built-in class's ``example`` (a test checks
the copy) so that ``gandiff --help`` imports no stage code. A class loads only when it is used; stage modules
import torch, diffusers or lightning inside their methods, never at the top (``import lightning`` takes 13 s).
Plugins (config ``plugins: {name: module:Class}``) are added by name with ``register``.
"""

from __future__ import annotations

import importlib
from typing import Any

BUILTIN_STAGES: dict[str, str] = {
    "identities": "gandiff.identity.stage:IdentitiesStage",
    "dreambooth": "gandiff.diffusion.dreambooth_stage:DreamBoothStage",
    "generate": "gandiff.diffusion.generate_stage:GenerateStage",
    "curate": "gandiff.curation.stage:CurateStage",
    "export": "gandiff.datasets.stage:ExportStage",
    "train": "gandiff.recognition.stage:TrainStage",
    "evaluate": "gandiff.evaluation.stage:EvaluateStage",
    "report": "gandiff.evaluation.report_stage:ReportStage",
}

STAGE_ORDER: tuple[str, ...] = tuple(BUILTIN_STAGES)  # what `gandiff run` runs, in this order

# Each built-in class's ``example`` (its ``gandiff --help`` line), copied here so the help imports no stage
# module; tests/foundation/test_stage_examples.py fails when a copy differs from its class.
BUILTIN_EXAMPLES: dict[str, str] = {
    "identities": "gandiff identities identity.num=100 'identity.target={gender: {male: 0.5, female: 0.5}}'",
    "dreambooth": "gandiff dreambooth dreambooth.steps=800 dreambooth.identities_per_batch=16",
    "generate": ("gandiff generate generation.images_per_identity=64 prompts=neutral\n              "
                 "gandiff generate generation.replay=id_000003_0007   # re-render one image, same pixels"),
    "curate": "gandiff curate -m curation.min_anchor_similarity=0.3,0.4,0.5",
    "export": "gandiff export 'export.formats=[recordio]'",
    "train": "gandiff train recognizer=iresnet50 trainer.max_epochs=20",
    "evaluate": "gandiff evaluate benchmark=verification_bins benchmark.root=/data/faces_webface_112x112",
    "report": "gandiff report",
}

# name -> "module:Class" of every loadable stage: the built-in ones, then plugins. Tests swap an entry for a
# fake stage with ``monkeypatch.setitem``.
STAGE_CLASSES: dict[str, str] = dict(BUILTIN_STAGES)


def stages_before(name: str) -> tuple[str, ...]:
    """The built-in stages that run before ``name`` (every one of them for the report)."""
    return STAGE_ORDER[:STAGE_ORDER.index(name)]


def register(name: str, target: str) -> None:
    """Make ``target`` (``"module:Class"``) loadable as stage ``name``."""
    module, sep, cls = str(target).partition(":")
    if not (sep and module and cls):
        raise ValueError(f"plugins.{name}={target!r}: must be 'module:Class', e.g. 'mypkg.stages:MyStage'")
    STAGE_CLASSES[name] = target


def example(name: str) -> str:
    """Stage ``name``'s worked example: the recorded copy for a built-in stage still registered as itself
    (no import), else its class's ``example`` (a plugin, or a test's stand-in: imports its module)."""
    if name in BUILTIN_EXAMPLES and STAGE_CLASSES.get(name) == BUILTIN_STAGES[name]:
        return BUILTIN_EXAMPLES[name]
    return str(stage_class(name).example)


def stage_class(name: str) -> type[Any]:
    """The class registered as stage ``name``, imported now.

    Raises KeyError for a name nobody registered, NotImplementedError when its module is not there, and
    TypeError when the class declares another name (its outputs would go to that stage's folder).
    """
    if name not in STAGE_CLASSES:
        raise KeyError(name)
    target = STAGE_CLASSES[name]
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module or module.startswith(e.name + ".")):
            raise NotImplementedError(f"stage {name!r} is not implemented yet ({module} is missing)") from e
        raise
    try:
        cls = getattr(mod, attr)
    except AttributeError:
        raise NotImplementedError(f"stage {name!r}: {module} has no class {attr!r} ({target})") from None
    declared = getattr(cls, "name", None)
    if declared != name:
        raise TypeError(f"stage {name!r} is registered as {target}, whose class declares name={declared!r}: "
                        f"set name = {name!r} on the class, or register it under {declared!r}")
    return cls
