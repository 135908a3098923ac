"""Overrides through the CLI's main(), in-process: an unknown key is one line (exit 2) with or without '+',
names the nearest valid key, and the mappings that are open by design stay open."""

from __future__ import annotations

import logging

import pytest

from gandiff.cli import main
from gandiff.config import compose
from gandiff.schema import ConfigError


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, caplog):
    """Run ``gandiff <args>`` in this process; returns (exit code, the error messages logged, stderr).

    An error before Hydra sets up logging reaches pytest's handler (caplog); one after reaches the console
    handler Hydra installs (stderr): both are collected."""
    monkeypatch.setenv("GANDIFF_ROOT", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def run(*args: str) -> tuple[int, list[str], str]:
        capsys.readouterr()
        caplog.clear()
        with pytest.raises(SystemExit) as e:
            main(list(args))
        err = capsys.readouterr().err
        errors = [ln.split("gandiff: ", 1)[1] for ln in err.splitlines() if "ERROR" in ln]
        errors += [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        return e.value.code, errors, err

    yield run
    for h in root.handlers[:]:  # Hydra configured logging onto the captured stderr: put pytest's back
        if h not in saved[0]:
            root.removeHandler(h)
            h.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize("override", ["identity.nmu=3", "+identity.nmu=3"])
def test_unknown_key_is_one_line_with_the_nearest_key_with_or_without_plus(cli, tmp_path, override):
    code, errors, err = cli("identities", override)
    assert code == 2 and "Traceback" not in err and "HYDRA_FULL_ERROR" not in err
    assert len(errors) == 1
    assert errors[0] == ("identity.nmu: unknown config key: did you mean identity.num? (keys are fixed by the "
                              "schema, with or without '+'; `gandiff run --cfg job` shows them all)")
    assert not (tmp_path / "demo" / "identities").exists()  # nothing was started


def test_plus_and_plain_give_the_same_line(cli):
    plain, plus = cli("identities", "dreambooth.seeed=1")[1], cli("identities", "+dreambooth.seeed=1")[1]
    assert plain == plus and len(plain) == 1 and "did you mean seed?" in plain[0]


def test_bad_type_and_bad_group_option_are_one_line_exit_2(cli):
    code, errors, err = cli("identities", "identity.num=abc")
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "identity.num: Value 'abc' of type 'str' could not be converted to Integer" in errors[0]
    code, errors, _ = cli("identities", "identity=stylegan9")
    assert code == 2 and len(errors) == 1 and "Could not find 'identity/stylegan9'" in errors[0]
    assert "dcgan" in errors[0]


def test_unknown_argument_of_a_target_is_refused_at_start():
    """identity.source is open (Any) but its keys are the arguments of its _target_."""
    with pytest.raises(ConfigError, match=r"^identity\.source\.weightz: unknown config key: did you mean "
                                          r"identity\.source\.weights\?"):
        compose(["+identity.source.weightz=/x.pt"])


def test_open_mappings_stay_open():
    cfg = compose(["+plugins.mine=my_pkg.stages:MyStage", "+trainer.val_bins.lfw=/data/lfw.bin",
                   "+dreambooth.class_nouns.id_000001=man",
                   "identity.target={gender: {male: 0.5, female: 0.5}}"])
    assert cfg.plugins.mine == "my_pkg.stages:MyStage" and cfg.trainer.val_bins.lfw == "/data/lfw.bin"
