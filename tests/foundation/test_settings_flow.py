"""The config is validated once, by the CLI at start, and that typed ``Config`` is every stage's
``ctx.settings``; a context built from a bare cfg (library callers) still validates it on first read."""

from __future__ import annotations

import logging

import pytest

from gandiff import config, pipeline
from gandiff.artifacts import ItemStore, atomic_write_json
from gandiff.config import Config, compose
from gandiff.pipeline import STAGE_CLASSES, Stage, StageContext

HERE = __name__


class SeenA(Stage):
    """Records the ``ctx.settings`` it was given."""

    name = "seen_a"
    seen: list = []

    def items(self, ctx):
        return ["one"]

    def process(self, ctx, keys):
        type(self).seen.append((self.name, ctx.settings))
        atomic_write_json(ctx.dir / "one.json", {"seed": ctx.settings.seed})
        ctx.items.put("one", {"n": 1}, [ctx.dir / "one.json"])


class SeenB(SeenA):
    name = "seen_b"
    upstream = ("seen_a",)


@pytest.fixture
def counted(monkeypatch):
    """gandiff.config.validate, counting its calls (the CLI and StageContext look it up when called)."""
    calls = []
    real = config.validate

    def validate(cfg):
        out = real(cfg)
        calls.append(out)
        return out

    monkeypatch.setattr(config, "validate", validate)
    SeenA.seen = []
    for cls in (SeenA, SeenB):
        monkeypatch.setitem(STAGE_CLASSES, cls.name, f"{HERE}:{cls.__name__}")
    return calls


def _cfg(tmp_path, *extra):
    plugins = [f"+plugins.{c.name}={HERE}:{c.__name__}" for c in (SeenA, SeenB)]
    return compose([f"paths.root={tmp_path}", "logger=none", *plugins, *extra])  # compose validates too


def _counted_cfg(tmp_path, counted, *extra):
    cfg = _cfg(tmp_path, *extra)
    counted.clear()  # compose's own check is not the one under test
    return cfg


@pytest.mark.parametrize("command", ["seen_a", "run"])
def test_the_cli_validates_once_and_every_stage_gets_that_config(tmp_path, counted, command):
    from gandiff import cli

    cfg = _counted_cfg(tmp_path, counted, "stages=[seen_a,seen_b]")
    statuses = cli._task(cfg, command)
    assert statuses == ({"seen_a": "done"} if command == "seen_a" else {"seen_a": "done", "seen_b": "done"})
    assert len(counted) == 1 and isinstance(counted[0], Config)
    assert [name for name, _ in SeenA.seen] == list(statuses)
    assert all(s is counted[0] for _, s in SeenA.seen)


def test_library_callers_without_settings_still_get_a_validated_config(tmp_path, counted):
    cfg = _counted_cfg(tmp_path, counted)
    pipeline.run_pipeline(cfg, stages=["seen_a", "seen_b"])  # as tests and scripts call it: no settings
    assert len(counted) == 2 and [s for _, s in SeenA.seen] == counted  # one per stage context, built lazily
    given = config.validate(cfg)
    pipeline.run_stage(cfg, "seen_a", settings=given, tracker=None)  # up to date: no context, no validation
    ctx = StageContext(name="seen_a", cfg=cfg, run_dir=tmp_path, dir=tmp_path / "x", key="k", inputs={},
                       shard_index=0, shard_count=1, items=ItemStore(tmp_path / "x"))
    assert ctx.validated is None and isinstance(ctx.settings, Config) and ctx.settings is not given
    ctx = StageContext(name="seen_a", cfg=None, run_dir=tmp_path, dir=tmp_path / "x", key="k", inputs={},
                       shard_index=0, shard_count=1, items=ItemStore(tmp_path / "x"), validated=given)
    assert ctx.settings is given  # cfg is not even looked at


def test_a_bad_value_is_still_one_line_at_start(tmp_path, counted, caplog):
    from gandiff import cli

    cfg = _cfg(tmp_path)
    cfg.identity.num = -3  # composed fine; the value rule is checked by validate
    with caplog.at_level(logging.ERROR, logger="gandiff"), pytest.raises(SystemExit) as exit_:
        cli._task(cfg, "seen_a")
    assert exit_.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "identity.num=-3: must be >= 1" in errors[0] and "\n" not in errors[0]
    assert SeenA.seen == [] and not (tmp_path / "demo" / "seen_a").exists()


def test_settings_given_to_run_stage_are_the_stages_and_others_validate_for_themselves(tmp_path, counted):
    cfg, other = (_cfg(tmp_path / d) for d in ("a", "b"))
    given = config.validate(cfg)
    counted.clear()
    pipeline.run_stage(cfg, "seen_a", settings=given)
    pipeline.run_stage(other, "seen_a")  # no settings given: validated for itself
    assert len(counted) == 1 and [s for _, s in SeenA.seen] == [given, *counted]
    assert SeenA.seen[0][1] is given and SeenA.seen[1][1] is counted[0]
