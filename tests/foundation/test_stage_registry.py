"""The stage registry: one table of stages; each class declares its own metadata; no import cycle; a light CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gandiff import stages
from gandiff.config import compose
from gandiff.pipeline import STAGE_CLASSES, STAGE_ORDER, StageError, run_stage, stage_class

PACKAGE = Path(stages.__file__).resolve().parent
HEAVY = ("torch", "lightning", "diffusers", "transformers")


def test_pipeline_reexports_the_registry_itself():
    assert STAGE_ORDER == tuple(stages.BUILTIN_STAGES) and STAGE_CLASSES is stages.STAGE_CLASSES


def test_every_stage_declares_its_name_inputs_keys_and_example(tmp_path):
    cfg = compose([f"paths.root={tmp_path}", "logger=none"])
    for i, name in enumerate(STAGE_ORDER):
        cls = stage_class(name)
        assert cls.name == name
        earlier = set(STAGE_ORDER[:i])
        assert set(cls.upstream) <= earlier, f"{name} reads a stage that runs after it: {cls.upstream}"
        assert set(cls().upstream_for(cfg)) <= earlier
        assert cls.example.startswith(f"gandiff {name}"), (name, cls.example)
        for key in cls.config_keys:
            assert OmegaConf.select(cfg, key, default="<unset>") != "<unset>", f"{name}.config_keys: {key!r}"


def test_the_report_summarises_every_stage_before_it():
    assert stage_class("report").upstream == STAGE_ORDER[:STAGE_ORDER.index("report")]


def test_cli_help_shows_each_class_example_in_order():
    from gandiff.cli import _help

    text = _help()
    lines = [text.index(f"  {name:<11} {stage_class(name).example}\n") for name in STAGE_ORDER]
    assert lines == sorted(lines)


def test_help_and_config_checks_import_no_heavy_library():
    code = ("import sys; from gandiff.cli import _help; _help(); from gandiff.config import Config; Config(); "
            "from gandiff.pipeline import stage_class, STAGE_ORDER; [stage_class(n) for n in STAGE_ORDER]; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["gandiff.config", "gandiff.pipeline", "gandiff.stages", "gandiff.cli"])
def test_each_module_imports_alone_and_config_never_loads_the_pipeline(module):
    code = f"import sys, {module}; print('gandiff.pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if module in ("gandiff.config", "gandiff.stages", "gandiff.cli"):
        assert out.stdout.strip() == "False"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The gandiff modules a file imports, at the top or inside functions (an import is an edge either way)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def test_the_package_has_no_import_cycle():
    files = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}

    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return seen

    cycles = sorted(m for m in graph if m in reaches(m))
    assert "gandiff.pipeline" not in reaches("gandiff.config")
    assert cycles == [], f"modules that import themselves through others: {cycles}"


def test_plugins_load_by_name_and_a_wrong_name_or_target_is_one_line(tmp_path, monkeypatch):
    toy = "tests.foundation.toy_stages:ToyMake"
    for name in ("toy_make", "mine"):  # registered below by the config; taken out again after the test
        monkeypatch.setitem(STAGE_CLASSES, name, toy)
    base = [f"paths.root={tmp_path}", "logger=none", "identity.num=3"]
    assert run_stage(compose([*base, f"+plugins.toy_make={toy}"]), "toy_make")["status"] == "done"
    with pytest.raises(StageError, match=r"registered as .*ToyMake, whose class declares name='toy_make'"):
        run_stage(compose([*base, f"+plugins.mine={toy}"]), "mine")
    with pytest.raises(StageError, match=r"unknown stage 'nope'"):
        stage_class("nope")
    with pytest.raises(ValueError, match=r"must be 'module:Class'"):
        stages.register("mine", "no_colon")


def test_composing_the_config_imports_no_heavy_library(tmp_path):
    code = (f"import sys; from gandiff.config import compose; compose(['paths.root={tmp_path}', 'logger=none']); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_target_arguments_read_from_source_agree_with_inspect():
    """The unknown-key check reads a ``_target_``'s arguments from its source (no import); for every target in
    conf/ that gives the set inspect gives (or, where the source does not say, defers to inspect)."""
    import inspect
    import re

    from hydra.utils import get_object

    from gandiff.config import CONF_DIR, _UNREAD, _source_params

    targets = {m for p in CONF_DIR.rglob("*.yaml") for m in re.findall(r"_target_:\s*([\w.]+)", p.read_text())}
    read = 0
    for target in sorted(targets):
        got = _source_params(target)
        if got is _UNREAD:
            continue
        params = inspect.signature(get_object(target)).parameters.values()
        want = None if any(p.kind is p.VAR_KEYWORD for p in params) else {
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        assert got == want, target
        read += 1
    assert read >= 10, f"only {read} of {len(targets)} targets read from source"
