"""The evaluator registry: what the evaluate stage measures, and how the report shows it.

An ``Evaluator`` makes the items ``<name>-<which>``: ``items(benchmark)`` lists those the benchmark config asks
for, ``measure(ev, key)`` measures one (row, files); ``section`` names the report section that shows it, ``row``
its row in that section's table. An ``Analysis`` adds one field to every score-distribution item (fairness,
dataset measures ...). A ``Section`` renders part of the report from the evaluate results. The stage iterates
the evaluators in order, the report the sections in use; a new benchmark is one ``register(Evaluator(...))``
and the ``benchmark`` schema field its ``items`` reads (docs/extending.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Modules whose import registers the built-in evaluators, analyses and sections (in this order).
BUILTINS = ("gandiff.evaluation.evaluators", "gandiff.evaluation.analyses", "gandiff.evaluation.sections",
            "gandiff.evaluation.prompt_effects_report",
            "gandiff.evaluation.independent")


@dataclass(frozen=True)
class Evaluator:
    name: str  # the prefix of its item keys: "bin" makes "bin-lfw", "bin-cfp_fp" ...
    items: Callable[[Any], list[str]]  # BenchmarkConfig -> the item keys it asks for ([] = not configured)
    measure: Callable[[Any, str], tuple[dict[str, Any], list[Path]]]  # (EvalContext, key) -> (row, files written)
    config: str = ""  # the benchmark.* keys that configure it (for people and error messages)
    section: str = "benchmarks"  # the report section that shows its items
    row: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None  # its row there (None: the section's own)
    # metrics.json "comparisons" from every item row of the run (score files under the stage folder)
    combine: Callable[[Path, dict[str, dict[str, Any]]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class DatasetScores:
    """One embedded dataset (export, GAN images, generated images) and its pair scores: an analysis' input."""

    key: str
    kind: str  # export | gan | generate
    embeddings: np.ndarray  # (N, D) L2-normalised
    labels: np.ndarray  # (N,) index into ids
    ids: list[str]
    attributes: dict[str, dict[str, Any]]  # identity id -> attributes
    pairs: Any  # gandiff.evaluation.distributions.PairScores
    embedder: str


@dataclass(frozen=True)
class Analysis:
    field: str  # the item row field it fills
    compute: Callable[[Any, DatasetScores], Any]  # (EvalContext, dataset) -> JSON-able value or None
    section: str  # the report section that shows it
    # False: it reads the run's folders, not the dataset's scores, so it runs on an empty dataset too (given a
    # DatasetScores with no embeddings and ``pairs`` None), e.g. the independent measures of every generated image.
    needs_scores: bool = True


@dataclass(frozen=True)
class ReportView:
    """What a report section reads: the evaluate stage's results and the report's own inputs."""

    metrics: dict[str, Any]  # metrics.json
    evaluate_dir: Path
    reference: Any = None  # the reference ScoreHistogram, or None
    reference_path: str | None = None
    diffusion: bool = True  # False for a GAN-only run (generation.source=gan)

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self.metrics.get("items", {})


@dataclass(frozen=True)
class Section:
    name: str
    render: Callable[[Any, ReportView], None]  # (gandiff.evaluation.document.Report, view) -> appends blocks


_REGISTRY: dict[type, dict[str, Any]] = {Evaluator: {}, Analysis: {}, Section: {}}
_loaded = False
_loading = False  # True while _builtins imports BUILTINS


def _name(entry: Evaluator | Analysis | Section) -> str:
    return entry.field if isinstance(entry, Analysis) else entry.name


def _rank(entry: Evaluator | Analysis | Section) -> int:
    """The position of the built-in module that defines ``entry`` in BUILTINS; other modules (plugins) rank last.
    Entries stay sorted by it, so the order never depends on which module a process happened to import first."""
    fn = entry.compute if isinstance(entry, Analysis) else entry.render if isinstance(entry, Section) else entry.measure
    module = getattr(fn, "__module__", None)
    return BUILTINS.index(module) if module in BUILTINS else len(BUILTINS)


def register(entry: Evaluator | Analysis | Section, before: str | None = None) -> Evaluator | Analysis | Section:
    """Add ``entry`` (last, or before the entry of its kind named ``before``); a name already taken is an error."""
    _builtins()  # the built-ins come first, whoever registers first
    table = _REGISTRY[type(entry)]
    name = _name(entry)
    if name in table:
        raise ValueError(f"{type(entry).__name__} {name!r} is already registered ({table[name]})")
    if before is not None and before not in table:
        raise ValueError(f"register({name!r}, before={before!r}): no {type(entry).__name__} named {before!r}; "
                         f"choose one of {list(table)}")
    entries = list(table.items())
    rank = _rank(entry)
    at = (next((i for i, (_, e) in enumerate(entries) if _rank(e) > rank), len(entries)) if before is None
          else [k for k, _ in entries].index(before))
    entries.insert(at, (name, entry))
    table.clear()
    table.update(entries)
    return entry


def unregister(entry: Evaluator | Analysis | Section) -> None:
    _REGISTRY[type(entry)].pop(_name(entry), None)


@contextmanager
def registered(*entries: Evaluator | Analysis | Section) -> Iterator[None]:
    """Register ``entries`` for the duration of a block (tests, notebooks)."""
    _builtins()
    done = []
    try:
        for e in entries:
            done.append(register(e))
        yield
    finally:
        for e in reversed(done):
            unregister(e)


def _builtins() -> None:
    global _loaded, _loading
    if _loaded or _loading:  # a built-in module's own register() while they load: it registers in module order
        return
    _loading = True
    try:
        for module in BUILTINS:  # a failed import raises again next time: no silently partial registry
            importlib.import_module(module)
        _loaded = True
    finally:
        _loading = False


def evaluators() -> list[Evaluator]:
    _builtins()
    return list(_REGISTRY[Evaluator].values())


def analyses() -> list[Analysis]:
    _builtins()
    return list(_REGISTRY[Analysis].values())


def sections() -> list[Section]:
    """The sections some evaluator or analysis shows its results in, in registration order."""
    _builtins()
    used = {e.section for e in evaluators()} | {a.section for a in analyses()}
    return [s for s in _REGISTRY[Section].values() if s.name in used]


def evaluator_for(key: str) -> Evaluator | None:
    """The evaluator that made item ``key`` (by its prefix), None for one no registered evaluator makes."""
    _builtins()
    return _REGISTRY[Evaluator].get(key.partition("-")[0])


def item_keys(benchmark: Any) -> list[str]:
    """Every item the benchmark config asks for, evaluator by evaluator."""
    keys: list[str] = []
    for ev in evaluators():
        got = list(ev.items(benchmark))
        bad = [k for k in got if k.partition("-")[0] != ev.name]
        if bad:
            raise ValueError(f"evaluator {ev.name!r} made items {bad}: its keys must start with '{ev.name}-'")
        keys += got
    return keys
