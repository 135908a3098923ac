"""``gandiff --help`` shows each stage's worked example without importing any stage module: the registry
(gandiff.stages) keeps a copy of each built-in class's ``example``, and these tests keep the copies equal."""

from __future__ import annotations

import importlib.abc
import sys

import pytest

from gandiff import cli, stages

STAGE_MODULES = sorted({target.partition(":")[0] for target in stages.BUILTIN_STAGES.values()})


def test_the_registry_records_every_builtin_stage_example_as_its_class_declares_it():
    assert set(stages.BUILTIN_EXAMPLES) == set(stages.BUILTIN_STAGES)
    for name in stages.BUILTIN_STAGES:
        assert stages.BUILTIN_EXAMPLES[name] == stages.stage_class(name).example, (
            f"gandiff/stages.py BUILTIN_EXAMPLES[{name!r}] differs from "
            f"{stages.BUILTIN_STAGES[name]}.example: copy the class's example there")


class _Refuse(importlib.abc.MetaPathFinder):
    """Refuses (and notes) every import of a stage module: no module object is made, so nothing leaks."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname in STAGE_MODULES:
            self.asked.append(fullname)
            raise ImportError(f"test: {fullname} must not be imported here")
        return None


@pytest.fixture
def no_stage_imports(monkeypatch):
    for module in STAGE_MODULES:  # loaded by other tests in this process: make them look not loaded yet
        monkeypatch.delitem(sys.modules, module, raising=False)
    finder = _Refuse()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    return finder


def test_help_imports_no_stage_module(no_stage_imports, capsys):
    cli.main(["--help"])
    cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    assert no_stage_imports.asked == [] and not [m for m in STAGE_MODULES if m in sys.modules]
    assert "cannot load" not in out
    for name, ex in stages.BUILTIN_EXAMPLES.items():
        assert f"  {name:<11} {ex}\n" in out
    assert f"example:\n  {stages.BUILTIN_EXAMPLES['generate']}\n" in out


def test_a_stage_registered_as_another_class_shows_that_class_example(monkeypatch):
    from tests.foundation import toy_stages

    class Other(toy_stages.ToyMake):
        name = "identities"
        example = "gandiff identities my.plugin=1"

    monkeypatch.setattr(toy_stages, "Other", Other, raising=False)
    monkeypatch.setitem(stages.STAGE_CLASSES, "identities", "tests.foundation.toy_stages:Other")
    assert cli._example("identities") == "gandiff identities my.plugin=1"  # imported, not the recorded copy
    monkeypatch.setitem(stages.STAGE_CLASSES, "mine", "tests.foundation.toy_stages:Other")
    assert cli._example("mine").startswith("(cannot load this stage: stage 'mine' is registered as")
