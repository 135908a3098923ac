"""``gandiff <stage>|run [hydra overrides]``: a thin driver over ``gandiff.pipeline``.

Stages take Hydra overrides (``key=value``, ``-m`` for sweeps). Tools (``faces``, ``inspect``) take
ordinary arguments and have their own ``--help``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

from gandiff.distributed import is_leader
from gandiff.stages import STAGE_ORDER

log = logging.getLogger("gandiff")
COMMAND_ENV = "GANDIFF_COMMAND"  # the stage a DDP rank re-launched by Lightning runs (see main)

# Each stage's example is its class's ``example``, read from gandiff.stages (which records the built-in
# ones, so the help imports no stage module); `run` is not a stage.
RUN_EXAMPLE = "gandiff run experiment=demo        # every stage in order (the default experiment)"
TOOLS = {
    "faces": ("gandiff.face.cli:main", "gandiff faces photo.jpg other.jpg   # detections, attributes, similarity"),
    "inspect": ("gandiff.datasets.inspect:main", "gandiff inspect experiments/demo/export/<key>   # dataset stats"),
    "report-sweep": ("gandiff.evaluation.report:main", "gandiff report-sweep experiments/multirun/<time>   # compare a sweep's datasets"),
    "compare": ("gandiff.evaluation.compare:main",
                "gandiff compare experiments/demo /data/faces_webface_112x112   # runs and datasets, one field table"),
    "reference": ("gandiff.evaluation.distributions:main",
                  "gandiff reference /data/vgg2.rec --out refs/vgg2_sface.json   # a real score distribution"),
}

HELP = """\
gandiff: synthetic face-recognition datasets the GANDiffFace way (GAN identities -> DreamBooth ->
prompted variations -> curation -> export), validated by training and evaluating recognizers.

usage: gandiff <stage>|run [key=value ...] [-m]     (Hydra overrides; -m sweeps comma lists)
       gandiff <tool> [args]                         (tools: {tools})

stages (in order), one worked example each:
{stages}

tools:
{tool_lines}

Every stage reads the previous stage's files under paths.run_dir (experiments/<experiment_name>/ by
default) and writes its own in <stage>/<key>/, where <key> hashes the config that decides it: rerun the
same command to resume; a second run does no work. With no overrides the embedded demo runs
(experiment=demo, CPU, minutes). Show the composed config: gandiff run --cfg job
"""


def _example(command: str) -> str:
    """The worked example of a stage (``gandiff.stages.example``: no import for a built-in one) or of run."""
    if command == "run":
        return RUN_EXAMPLE
    from gandiff.stages import example

    try:
        return example(command)
    except Exception as e:  # noqa: BLE001 - a stage that cannot load must not take the help text down with it
        return f"(cannot load this stage: {str(e).splitlines()[0] if str(e) else type(e).__name__})"


def _help() -> str:
    stages = "\n".join(f"  {name:<11} {_example(name)}" for name in (*STAGE_ORDER, "run"))
    tools = "\n".join(f"  {name:<11} {ex}" for name, (_, ex) in TOOLS.items())
    return HELP.format(stages=stages, tools=", ".join(TOOLS), tool_lines=tools)


def _task(cfg: Any, command: str) -> dict[str, Any] | None:
    """The Hydra task: validate, open the tracker, run the stage(s). User errors become one line."""
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from gandiff.config import validate
    from gandiff.errors import UserError
    from gandiff.log import setup_logging
    from gandiff.pipeline import run_pipeline, run_stage
    from gandiff.tracking import open_tracker

    setup_logging()
    cfg.stage = command
    try:
        settings = validate(cfg)  # once, here: every stage's ctx.settings is this object
        if command == "generate" and cfg.generation.replay:
            return _replay(cfg)
        run_dir = OmegaConf.select(cfg, "paths.run_dir")
        # DDP ranks > 0 write nothing, trackers included: the run is logged once, by rank 0.
        with open_tracker(
                cfg.logger.kind if is_leader() else "none", f"{run_dir}/tracking",
                name=f"{cfg.experiment_name}-{cfg.stage}", project=cfg.logger.project, entity=cfg.logger.entity,
                mode=cfg.logger.mode, config=OmegaConf.to_container(cfg, resolve=True),
                tags=list(cfg.logger.tags)) as tracker:
            if cfg.stage == "run":
                results = run_pipeline(cfg, tracker=tracker, settings=settings)
            else:
                results = [run_stage(cfg, cfg.stage, tracker=tracker, settings=settings)]
    except (UserError, FileNotFoundError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    except InstantiationException as e:  # a model that could not be built: say why in one line if we can
        cause = e.__cause__
        if not isinstance(cause, (UserError, FileNotFoundError)):
            raise
        log.error("%s", cause)
        raise SystemExit(2) from None
    except NotImplementedError as e:
        log.error("%s", e)
        raise SystemExit(3) from None
    if results and all(r["status"] == "up-to-date" for r in results):
        log.info("everything is up to date: nothing to do")
    if is_leader() and (command == "run" or any(r["stage"] == "report" for r in results)):
        print("\n".join(report_lines(results)), flush=True)
    return {r["stage"]: r["status"] for r in results}


def report_lines(results: list[dict[str, Any]]) -> list[str]:
    """How a run ends on the terminal: where the report is and its claims (the sentences the report itself
    states, from ``gandiff.evaluation.report_stage.report_claims``), or why this run made no report."""
    from pathlib import Path

    rep = next((r for r in results if r["stage"] == "report" and r.get("dir")), None)
    if rep is None:
        last = results[-1] if results else {"stage": "nothing", "status": "run"}
        return [f"report: not made by this run (it ended at {last['stage']}: {last['status']}); "
                "`gandiff run` with the same overrides finishes it"]
    d = Path(rep["dir"])
    lines = [f"report: {d / 'report.html'} (Markdown: {d / 'report.md'})"]
    try:
        from gandiff.evaluation.report_stage import report_claims

        claims = report_claims(d)
    except (OSError, ValueError, KeyError) as e:  # the path is still worth printing
        log.warning("could not read the report's claims in %s: %s", d, e)
        claims = []
    lines += [f"  - {c}" for c in claims] or ["  (the report states no claim: no face-embedder distribution)"]
    return lines


def _replay(cfg: Any) -> dict[str, Any]:
    """``gandiff generate generation.replay=<image_id>``: re-render one manifest row, compare pixels."""
    import json

    from gandiff.diffusion.generate_stage import replay

    result = replay(cfg, cfg.generation.replay)
    print(json.dumps(result, indent=1, default=str))
    if not result["identical"]:
        raise SystemExit(1)
    return {"generate": "replayed"}


def _command(argv: list[str]) -> tuple[str, list[str]]:
    """The command and its overrides. A DDP rank that Lightning re-launched has only overrides (its first
    word holds '=' or is a Hydra flag): its command is the one its parent set in GANDIFF_COMMAND."""
    inherited = os.environ.get(COMMAND_ENV)
    if inherited and not is_leader() and ("=" in argv[0] or argv[0].startswith("-")):
        return inherited, argv
    return argv[0], argv[1:]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help())
        return
    cmd, rest = _command(argv)
    if cmd in TOOLS:
        module, func = TOOLS[cmd][0].split(":")
        raise SystemExit(getattr(importlib.import_module(module), func)(rest) or 0)
    if cmd not in (*STAGE_ORDER, "run"):
        print(f"gandiff: unknown command {cmd!r}; choose a stage ({', '.join(STAGE_ORDER)}), run, or a tool "
              f"({', '.join(TOOLS)}). See gandiff --help.", file=sys.stderr)
        raise SystemExit(2)
    if "--help" in rest or "-h" in rest:
        print(f"gandiff {cmd} [key=value ...] [-m]\n\nexample:\n  {_example(cmd)}\n\n"
              "Hydra's own help (groups and the composed config): gandiff run --hydra-help / --cfg job")
        return

    import hydra

    from gandiff.config import CONF_DIR, register

    register()

    def gandiff(cfg: Any) -> dict[str, Any] | None:  # Hydra names the job (and its log file) after this
        return _task(cfg, cmd)

    # Hydra parses sys.argv itself (overrides, -m, --cfg ...). sys.argv[0] stays this program: Lightning's
    # DDP launcher starts ranks 1..N-1 by running [python, sys.argv[0], *sys.argv[1:], hydra.run.dir=...],
    # and those find the command in GANDIFF_COMMAND (see _command).
    sys.argv = [sys.argv[0] if sys.argv and sys.argv[0] else "gandiff", *rest]
    os.environ[COMMAND_ENV] = cmd
    # Hydra prints a composition error (unknown key, wrong type, missing group option) in four lines and exits
    # 1; with HYDRA_FULL_ERROR it raises instead, and becomes the one line (exit 2) that validate() gives the
    # same mistake made with '+'. Other errors keep their full traceback.
    from hydra.errors import ConfigCompositionException, OverrideParseException

    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(gandiff)()
    except (ConfigCompositionException, OverrideParseException) as e:
        from gandiff.config import override_error_message
        from gandiff.log import setup_logging

        setup_logging()
        log.error("%s", override_error_message(e))
        raise SystemExit(2) from None
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


if __name__ == "__main__":
    main()
