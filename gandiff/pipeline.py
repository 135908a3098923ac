"""The stage contract, resume, shards and ``stage.json`` (the stages and their order: ``gandiff.stages``).

``run_stage(cfg, name)`` is the one entry point the CLI, a Hydra sweep and ``gandiff run`` use. A stage class
lists its ``items(ctx)``, makes and records them in ``process(ctx, keys)`` and writes its manifests in
``merge(ctx, keys)``; the pipeline finds the inputs, takes this process's shard, skips items whose recorded
files are intact, merges once every shard is done and writes ``stage.json`` last. Each stage writes under
``${paths.run_dir}/<stage>/<key>/``, the key hashing its config groups and its upstream stages' keys, so a
config decides every folder before anything runs (``force_inputs=<stage>:<key>`` builds on another).
One module: one contract; keys, resume, shards and the DDP ranks' plan decide together what a stage
folder holds, through shared private helpers (``_find_input``, ``_plan_file``).
Design: docs/design.md#the-stage-contract.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gandiff import stages
from gandiff.artifacts import (
    ItemStore,
    atomic_write_json,
    config_hash,
    read_json,
    remove_stale_tmp,
    select_shard,
)
from gandiff.distributed import is_leader, job_token, launched_together, process_rank
from gandiff.errors import UserError
from gandiff.schema import plain

log = logging.getLogger(__name__)

# The stages by name, in run order, as "module:Class" (gandiff.stages). Re-exported: ``STAGE_CLASSES[name] =
# "module:Class"`` (or config ``plugins``) adds a stage; each class is imported only when it is used.
STAGE_ORDER = stages.STAGE_ORDER
STAGE_CLASSES = stages.STAGE_CLASSES


class StageError(UserError, RuntimeError):
    """A problem the user can fix (missing input, stale output, bad file); printed as one line."""


class Stage:
    """Base class. Subclasses set the class attributes and implement ``items``, ``process``, ``merge``."""

    name: str = ""
    upstream: tuple[str, ...] = ()  # stages whose outputs this one reads
    example: str = ""  # one worked command line for ``gandiff --help`` (``gandiff <name> key=value ...``)
    config_keys: tuple[str, ...] = ()  # config groups that decide this stage's outputs
    # Dotted keys inside ``config_keys`` that change speed, not results (batch sizes, workers, devices).
    ignore_keys: tuple[str, ...] = ()
    # How items are checked on resume: "sha256" reads every file again, "size" only stats it.
    verify: str = "sha256"
    # Raised by one when a fix changes what the stage writes under an unchanged config, so that folders written
    # before the fix get a new key instead of being reused. It enters the key only when nonzero (stage_key): the
    # folders of stages never revised keep theirs.
    revision: int = 0
    # True for a stage that only summarises its inputs (the report): when an upstream stage was redone since it
    # finished, it is rebuilt instead of refused (overwrite=true is for stages whose outputs cost work).
    rebuild_on_new_inputs: bool = False
    # True: in a multi-process job (DDP) every process runs ``process`` (the leader alone records items,
    # merges and writes stage.json); False: the leader runs the stage and the other processes skip it.
    distributed: bool = False

    def upstream_for(self, cfg: Any) -> tuple[str, ...]:
        """The stages this one reads under ``cfg``: ``upstream``, unless a setting changes the inputs
        (``generation.source=gan`` makes the generate stage read the GAN images instead of adapters)."""
        return self.upstream

    def config_keys_for(self, cfg: Any) -> tuple[str, ...]:
        """The config keys that decide this stage's outputs under ``cfg`` (``config_keys`` unless a setting
        makes some irrelevant: GAN-only generation copies images, so no prompt or sampler setting matters)."""
        return self.config_keys

    def items(self, ctx: StageContext) -> list[str]:
        raise NotImplementedError

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        raise NotImplementedError

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        return {"items": len(keys)}


@dataclasses.dataclass
class StageContext:
    """What a stage needs to know about where it runs. Built by the pipeline from the config."""

    name: str
    cfg: Any  # the composed DictConfig (stage keys hash it); stages read ``settings``, its typed form
    run_dir: Path
    dir: Path  # this stage's output folder (``run_dir/<name>/<key>``)
    key: str
    inputs: dict[str, Path]  # upstream stage name -> its output folder
    shard_index: int
    shard_count: int
    items: ItemStore
    tracker: Any = None  # gandiff.tracking.Tracker or None
    leader: bool = True  # False in DDP ranks > 0: write nothing (``items.put`` is a no-op there)
    # Speed figures of this call (images/s ...): they go to stage.json's ``timings``, never into result files,
    # so that two identical runs write the same result bytes.
    timings: dict[str, Any] = dataclasses.field(default_factory=dict)
    # ``cfg`` already validated (``gandiff.config.validate(cfg)``, as the CLI does once at start); None: built
    # on first read of ``settings``.
    validated: Any = dataclasses.field(default=None, repr=False)

    @functools.cached_property
    def settings(self) -> Any:
        """The validated typed config (``gandiff.config.Config``): ``validated`` when the caller passed it,
        else built from ``cfg`` once, on first read. A stage reads its group as ``ctx.settings.recognizer``
        and passes those typed objects down."""
        if self.validated is not None:
            return self.validated
        from gandiff.config import validate

        return validate(self.cfg)

    def input_dir(self, stage: str) -> Path:
        if stage not in self.inputs:
            raise KeyError(f"stage {self.name!r} does not declare {stage!r} as an input")
        return self.inputs[stage]

    def portable(self, value: Any) -> Any:
        """``value`` (a string, or lists and dicts of them) with this run's folder taken out of its paths, so
        stage folders are named by stage and key (``export/<key>/...``): result files then have the same bytes
        whichever folder (``paths.root``) the run is in."""
        if isinstance(value, str):
            return value.replace(f"{self.run_dir}{os.sep}", "")
        if isinstance(value, dict):
            return {k: self.portable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.portable(v) for v in value)
        return value

    def progress(self, iterable: Iterable[Any], total: int | None = None, desc: str = "") -> Iterable[Any]:
        from gandiff.log import progress

        return progress(iterable, total=total, desc=desc or self.name)


def stage_class(name: str) -> type[Stage]:
    """The class of stage ``name`` (built in or a plugin), imported now; StageError when nobody registered it."""
    try:
        cls = stages.stage_class(name)
    except KeyError:
        raise StageError(f"unknown stage {name!r}: choose one of {', '.join(STAGE_CLASSES)}") from None
    except TypeError as e:
        raise StageError(str(e)) from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise StageError(f"stage {name!r}: {STAGE_CLASSES[name]} is not a gandiff.pipeline.Stage subclass")
    return cls


def load_stage(name: str) -> Stage:
    return stage_class(name)()


# --------------------------------------------------------------------------------------------- config keys


def _drop(d: Any, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if isinstance(d, dict) and head in d:
        if rest:
            _drop(d[head], rest)
        else:
            del d[head]


def _logical(value: Any) -> Any:
    """Shipped model files by their ``${pkg:...}`` name, not their path in this virtual environment."""
    from gandiff.config import LOGICAL_PATHS

    if isinstance(value, dict):
        return {k: _logical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_logical(v) for v in value]
    return LOGICAL_PATHS.get(value, value) if isinstance(value, str) else value


def stage_config(cfg: Any, stage: Stage) -> dict[str, Any]:
    """The part of the config that decides a stage's outputs, as plain values."""
    own = {k: _logical(plain(cfg, k)) for k in stage.config_keys_for(cfg)}
    own["seed"] = plain(cfg, "seed")
    for k in stage.ignore_keys:
        _drop(own, k)
    return own


def stage_key(cfg: Any, name: str, _cache: dict[str, str] | None = None) -> str:
    """Hash of the stage's own config and its upstream stages' keys: it names the output folder."""
    cache = {} if _cache is None else _cache
    if name not in cache:
        stage = load_stage(name)
        ups = {u: stage_key(cfg, u, cache) for u in stage.upstream_for(cfg)}
        payload = {"stage": name, "config": stage_config(cfg, stage), "upstream": ups}
        if stage.revision:
            payload["revision"] = stage.revision
        cache[name] = config_hash(payload)
    return cache[name]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two stage configs: ``identity.num: 8 -> 16``."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<unset>") != b.get(k, "<unset>"):
            out.append(f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}")
    return out


def upstream_records(folders: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The ``stage.json`` record of each stage folder and of every stage upstream of it (following each
    record's ``inputs``), once each, depth first; folders without a record are skipped."""
    seen: set[Path] = set()
    todo = list(folders)
    while todo:
        d = todo.pop()
        if d in seen or not (d / "stage.json").exists():
            continue
        seen.add(d)
        rec = read_json(d / "stage.json")
        yield rec
        todo += [d.parent.parent / name / inp["key"] for name, inp in rec.get("inputs", {}).items()]


def stage_dir(cfg: Any, name: str, key: str | None = None) -> Path:
    return Path(plain(cfg, "paths.run_dir")).resolve() / name / (key or stage_key(cfg, name))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("gandiff", "torch", "diffusers", "transformers", "lightning", "onnxruntime", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _find_input(cfg: Any, up: str, key: str, forced: dict[str, str]) -> Path:
    """The folder of a finished upstream stage; a clear error naming what differs when it is missing."""
    d = stage_dir(cfg, up, forced.get(up, key))
    if (d / "stage.json").exists():
        return d
    root = d.parent
    others = sorted(p for p in root.glob("*/stage.json")) if root.exists() else []
    if (d / "items").exists():
        raise StageError(
            f"stage {up!r} has not finished in {d} (some shards or items are missing): "
            f"run `gandiff {up}` with the same overrides to complete it"
        )
    if not others:
        raise StageError(f"stage {up!r} has no outputs under {root}: run `gandiff {up}` first (or `gandiff run`)")
    wanted = stage_config(cfg, load_stage(up))
    lines = []
    for p in others[-3:]:
        rec = read_json(p)
        diff = config_diff(rec.get("config", {}), wanted) or ["(its own upstream stages differ)"]
        lines.append(f"  {p.parent.name}: " + "; ".join(diff[:6]))
    raise StageError(
        f"stage {up!r} was run under another config: no outputs for this config ({key}) in {root}.\n"
        + "\n".join(lines)
        + f"\nRerun `gandiff {up}` with this config, or build on one of these as it is with "
        f"force_inputs=[{up}:{others[-1].parent.name}]"
    )


def _parse_forced(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for v in values or ():
        stage, sep, key = str(v).partition(":")
        if not sep or stage not in STAGE_CLASSES or not key:
            raise StageError(f"force_inputs={v!r}: expected '<stage>:<key>', e.g. 'identities:1a2b3c4d5e6f7a8b'")
        out[stage] = key
    return out


def register_plugins(cfg: Any) -> None:
    """Make the config's extra stages (``plugins: {name: module:Class}``) loadable by name."""
    for name, target in (plain(cfg, "plugins") or {}).items():
        try:
            stages.register(name, target)
        except ValueError as e:
            raise StageError(str(e)) from None


def run_stage(cfg: Any, name: str, tracker: Any = None, *, settings: Any = None) -> dict[str, Any]:
    """Run one stage (this process's shard of it) and return its summary.

    The summary has ``status``: "done" (this call finished the stage), "up-to-date" (nothing to do),
    or "shard-done" (this shard is done, other shards are not yet). ``settings``: ``validate(cfg)`` when the
    caller has it (the CLI validates once at start), the stage's ``ctx.settings``; None: its context builds
    them when first read.
    """
    register_plugins(cfg)
    stage = load_stage(name)
    cache: dict[str, str] = {}
    key = stage_key(cfg, name, cache)
    forced = _parse_forced(plain(cfg, "force_inputs"))
    # In a multi-process job, ranks > 0 follow rank 0, except in data stages split into shards: there each
    # process is one shard's worker (srun -n4 bash -c 'gandiff generate shard.count=4 shard.index=$SLURM_PROCID').
    call = _next_call() if stage.distributed else 0
    if not is_leader() and (stage.distributed or int(plain(cfg, "shard.count")) == 1):
        return _follow_stage(cfg, stage, key, cache, forced, call, settings)
    plan = _plan_file(cfg, stage, key, call) if is_leader() else None
    if plan is None:
        return _lead_stage(cfg, stage, key, cache, forced, tracker, None, settings)
    try:
        return _lead_stage(cfg, stage, key, cache, forced, tracker, plan, settings)
    except BaseException as e:  # the ranks waiting for the plan stop too, saying why
        _publish_plan(plan, {"error": f"{type(e).__name__}: {e}"})
        raise


_CALLS = [0]  # distributed stages entered by this process so far: every rank runs the same sequence


def _next_call() -> int:
    _CALLS[0] += 1
    return _CALLS[0]


def _plan_file(cfg: Any, stage: Stage, key: str, call: int) -> Path | None:
    """Where rank 0 tells ranks that started with it (srun, torchrun) what this distributed stage does:
    named by the launch (unique per job, step and restart) and by the call's number in this process, so
    no plan of another launch or another stage call can be taken for this one."""
    token = job_token()
    if not (stage.distributed and launched_together() and token):
        return None
    return stage_dir(cfg, stage.name, key) / ".plans" / f"{token}.{call}.json"


def _publish_plan(plan: Path | None, content: dict[str, Any]) -> None:
    if plan is not None:
        atomic_write_json(plan, {**content, "written": time.time()})


def _lead_stage(cfg: Any, stage: Stage, key: str, cache: dict[str, str], forced: dict[str, str], tracker: Any,
                plan: Path | None, settings: Any = None) -> dict[str, Any]:
    name = stage.name
    inputs = {u: _find_input(cfg, u, cache[u], forced) for u in stage.upstream_for(cfg)}
    out_dir = stage_dir(cfg, name, key)
    run_dir = Path(plain(cfg, "paths.run_dir")).resolve()
    own_cfg = stage_config(cfg, stage)
    input_fps = {u: read_json(p / "stage.json")["outputs"] for u, p in inputs.items()}
    shard_index, shard_count = int(plain(cfg, "shard.index")), int(plain(cfg, "shard.count"))

    input_record = {u: {"key": p.name, "outputs": input_fps[u]} for u, p in inputs.items()}
    done_json, started_json = out_dir / "stage.json", out_dir / "config.json"
    if plain(cfg, "overwrite") and out_dir.exists():
        log.info("%s: overwrite=true, removing %s", name, out_dir)
        shutil.rmtree(out_dir)
    if stage.rebuild_on_new_inputs and out_dir.exists():
        record = done_json if done_json.exists() else started_json
        if record.exists() and read_json(record).get("inputs") != input_record:
            log.warning("%s: an upstream stage was redone since %s was %s: rebuilding it", name, out_dir,
                        "built" if record is done_json else "started")
            shutil.rmtree(out_dir)
    if done_json.exists():
        if read_json(done_json).get("inputs") != input_record:
            raise StageError(f"{out_dir} was built on inputs that have changed since (an upstream stage was "
                             f"redone): pass overwrite=true to redo {name!r}")
        # A cheap check (sizes) that nobody deleted or truncated outputs since the stage finished.
        changed = ItemStore(out_dir, verify="size").pending(ItemStore(out_dir).keys())
        if not changed:
            log.info("%s: up to date in %s, nothing to do", name, out_dir)
            _publish_plan(plan, {"todo": []})
            return {"stage": name, "status": "up-to-date", "dir": str(out_dir), **read_json(done_json)["counts"]}
        log.warning("%s: %d items changed since the stage finished, or were skipped for a package installed since "
                    "(e.g. %s): redoing them",
                    name, len(changed), changed[0])
        done_json.unlink()
    elif started_json.exists() and read_json(started_json).get("inputs") != input_record:
        raise StageError(f"{out_dir} holds a partial run made from other inputs (an upstream stage was redone "
                         f"since): pass overwrite=true to start {name!r} again")

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(started_json, {"stage": name, "key": key, "config": own_cfg, "inputs": input_record})
    stale = remove_stale_tmp(out_dir)
    if stale:
        log.info("%s: removed %d temporary files left by an interrupted run", name, stale)

    ctx = StageContext(
        name=name,
        cfg=cfg,
        run_dir=run_dir,
        dir=out_dir,
        key=key,
        inputs=inputs,
        shard_index=shard_index,
        shard_count=shard_count,
        items=ItemStore(out_dir, verify=stage.verify),
        tracker=tracker,
        validated=settings,
    )
    t0, c0 = time.time(), time.process_time()
    keys = stage.items(ctx)
    if len(set(keys)) != len(keys):
        raise StageError(f"stage {name!r} listed duplicate item keys")
    mine = select_shard(keys, shard_index, shard_count)
    todo = ctx.items.pending(mine)
    log.info(
        "%s: %d items, shard %d/%d holds %d, %d to do -> %s",
        name, len(keys), shard_index, shard_count, len(mine), len(todo), out_dir,
    )
    _publish_plan(plan, {"todo": todo, "inputs": {u: str(p) for u, p in inputs.items()}})
    if todo:
        stage.process(ctx, todo)
        still = ctx.items.unrecorded(todo)
        if still:
            raise StageError(f"stage {name!r} did not record {len(still)} items, e.g. {still[:3]}")
    timing = {"seconds": round(time.time() - t0, 3), "cpu_seconds": round(time.process_time() - c0, 3)}

    # Other shards' items: their records are written last, after their files, so a record means done.
    mine_set = set(mine)
    missing = ctx.items.unrecorded([k for k in keys if k not in mine_set])
    if missing:
        atomic_write_json(out_dir / "shards" / f"{shard_index}-of-{shard_count}.json",
                          {"items": len(mine), "made": len(todo), **timing, **ctx.timings})
        log.info("%s: shard %d/%d done; %d items of other shards still to do", name, shard_index, shard_count,
                 len(missing))
        return {"stage": name, "status": "shard-done", "dir": str(out_dir), "pending": len(missing)}

    counts = stage.merge(ctx, keys)
    reserved = {"stage", "status", "dir", "pending"} & set(counts)
    if reserved:
        raise StageError(f"stage {name!r} returned counts named {sorted(reserved)}: those names are the "
                         "pipeline's own, rename them")
    record = {
        "stage": name,
        "key": key,
        "revision": stage.revision,  # part of the key when nonzero (stage_key)
        "config": own_cfg,
        "inputs": input_record,
        "outputs": ctx.items.files_digest(keys),
        "counts": counts,
        "timings": {**timing, **ctx.timings, "made_here": len(todo),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "shards": shard_count,
        "versions": _versions(),
        "argv": sys.argv[1:],
    }
    atomic_write_json(done_json, record)  # last: its presence means the stage is complete
    log.info("%s: done in %.1f s -> %s", name, timing["seconds"], out_dir)
    if tracker is not None:
        tracker.log_summary(name, counts)
    return {"stage": name, "status": "done", "dir": str(out_dir), **counts}


def _follow_stage(cfg: Any, stage: Stage, key: str, cache: dict[str, str], forced: dict[str, str],
                  call: int, settings: Any = None) -> dict[str, Any]:
    """A DDP rank > 0: take part in a distributed stage, write nothing; skip every other stage.

    Ranks start either inside rank 0's ``Trainer.fit`` (Lightning's launcher: the upstream stages are
    done and rank 0 has decided what to do, so a follower finds the same pending items) or all at once
    (srun, torchrun): then a follower waits for rank 0's plan (the items to do, the inputs to read; or
    rank 0's error), so that ``overwrite=true``, redone inputs and resumes are decided once, by rank 0.
    """
    name, rank = stage.name, process_rank()
    if not stage.distributed:
        log.debug("%s: rank %d skips it (rank 0 runs it)", name, rank)
        return {"stage": name, "status": "follower"}
    out_dir = stage_dir(cfg, name, key)
    wait_s = float(os.environ.get("GANDIFF_FOLLOWER_WAIT_S", 24 * 3600))
    plan_path = _plan_file(cfg, stage, key, call)
    t0 = time.time()

    def waited(what: str) -> None:
        if time.time() - t0 > wait_s:
            raise StageError(f"{name}: rank {rank} waited {wait_s:.0f} s for {what} (GANDIFF_FOLLOWER_WAIT_S); "
                             "is rank 0 running?")
        time.sleep(2.0)

    if plan_path is not None:
        while not plan_path.exists():
            waited(f"rank 0's plan {plan_path}")
        plan = read_json(plan_path)
        if "error" in plan:
            raise StageError(f"{name}: rank 0 stopped: {plan['error']}")
        inputs = {u: Path(p) for u, p in plan.get("inputs", {}).items()}
        todo = list(plan["todo"])
    else:
        inputs = {}
        for u in stage.upstream_for(cfg):
            while True:
                try:
                    inputs[u] = _find_input(cfg, u, cache[u], forced)
                    break
                except StageError:
                    waited(f"stage {u!r} to be finished by rank 0")
        todo = None
    ctx = StageContext(
        name=name, cfg=cfg, run_dir=Path(plain(cfg, "paths.run_dir")).resolve(), dir=out_dir, key=key,
        inputs=inputs, shard_index=int(plain(cfg, "shard.index")), shard_count=int(plain(cfg, "shard.count")),
        items=ItemStore(out_dir, verify=stage.verify, readonly=True), tracker=None, leader=False,
        validated=settings,
    )
    if todo is None:
        todo = ctx.items.pending(select_shard(stage.items(ctx), ctx.shard_index, ctx.shard_count))
    if todo:
        stage.process(ctx, todo)
    log.debug("%s: rank %d done", name, rank)
    return {"stage": name, "status": "follower", "dir": str(out_dir)}


def _needed(cfg: Any, order: list[str]) -> list[str]:
    """The stages of ``order`` that the last one needs, directly or through others, under ``cfg``."""
    needed, keep = {order[-1]}, []
    for name in reversed(order):
        if name in needed:
            keep.append(name)
            needed |= set(load_stage(name).upstream_for(cfg))
        else:
            log.info("%s: skipped, no later stage reads it under this config", name)
    return keep[::-1]


def run_pipeline(cfg: Any, stages: Sequence[str] | None = None, tracker: Any = None,
                 on_missing: Callable[[str], None] | None = None, *,
                 settings: Any = None) -> list[dict[str, Any]]:
    """Run stages in order (``cfg.stages``, or every stage). A stage not implemented yet stops the run.

    Without an explicit list, a stage that no later stage reads under this config is left out (with
    ``generation.source=gan`` nothing reads the DreamBooth adapters, so DreamBooth does not run).
    ``settings``: ``validate(cfg)``, handed to every stage (see ``run_stage``).
    """
    explicit = list(stages or plain(cfg, "stages") or [])
    stages = explicit or _needed(cfg, list(STAGE_ORDER))
    results = []
    for n, name in enumerate(stages):
        try:
            results.append(run_stage(cfg, name, tracker=tracker, settings=settings))
        except BaseException as e:
            _release_followers(cfg, stages[n + 1:], {"error": f"{name}: {type(e).__name__}: {e}"})
            if not isinstance(e, NotImplementedError):
                raise
            log.warning("%s; the stages after it are skipped: %s", e, ", ".join(stages[stages.index(name) + 1:]))
            if on_missing:
                on_missing(name)
            results.append({"stage": name, "status": "not-implemented"})
            break
        if results[-1]["status"] == "shard-done":
            _release_followers(cfg, stages[n + 1:], {"todo": []})
            log.info("%s is split over shards that are not all done: stopping here", name)
            break
    return results


def _release_followers(cfg: Any, stages: Sequence[str], content: dict[str, Any]) -> None:
    """Rank 0 stops before some distributed stages: tell the ranks waiting at each of them (in order)."""
    if not is_leader():
        return
    try:
        for name in stages:
            stage = load_stage(name)
            if stage.distributed:
                _publish_plan(_plan_file(cfg, stage, stage_key(cfg, name), _next_call()), content)
    except Exception as e:  # never hide the error that stopped the run
        log.warning("could not tell the other ranks that rank 0 stopped: %s", e)
