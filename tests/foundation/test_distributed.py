"""Multi-process jobs (DDP): rank 0 writes, the other ranks only take part in distributed stages."""

from __future__ import annotations

import pytest
from . import toy_stages

from gandiff.cli import COMMAND_ENV, _command
from gandiff.config import compose
from gandiff.distributed import is_leader, process_rank
from gandiff.pipeline import StageError, run_stage, stage_dir

toy_stages.register()
RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_NTASKS", "SLURM_PROCID", "WORLD_SIZE",
             "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID",
             "TORCHELASTIC_RESTART_COUNT", "GANDIFF_FOLLOWER_WAIT_S")


@pytest.fixture
def env(monkeypatch):
    for v in RANK_VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


@pytest.mark.parametrize("variables, rank", [
    ({}, 0),
    ({"LOCAL_RANK": "0"}, 0),
    ({"LOCAL_RANK": "1"}, 1),  # a rank Lightning's launcher started
    ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun: the global rank wins
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1),  # rank 0 of the second node is not the leader
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "1"}, 0),  # one task per job (array, submitit sweep): leader
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2),  # srun with 4 tasks
    ({"RANK": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, 0),  # torchrun under srun: RANK decides
])
def test_rank_from_the_launchers_variables(env, variables, rank):
    for k, v in variables.items():
        env.setenv(k, v)
    assert process_rank() == rank
    assert is_leader() == (rank == 0)


def test_a_bad_rank_variable_is_named(env):
    env.setenv("LOCAL_RANK", "one")
    with pytest.raises(ValueError, match="LOCAL_RANK='one'"):
        process_rank()


def _cfg(root):
    return compose([f"paths.root={root}", "logger=none", "identity.num=4"])


def test_followers_skip_plain_stages_and_write_nothing(env, tmp_path):
    cfg = _cfg(tmp_path)
    env.setenv("LOCAL_RANK", "1")
    assert run_stage(cfg, "toy_make") == {"stage": "toy_make", "status": "follower"}
    assert not stage_dir(cfg, "toy_make").exists()


def test_followers_take_part_in_distributed_stages_without_recording(env, tmp_path):
    cfg = _cfg(tmp_path)
    run_stage(cfg, "toy_make")  # the leader made the input
    toy_stages.ToyDistributedSum.calls.clear()
    env.setenv("LOCAL_RANK", "1")  # a rank Lightning started from inside rank 0's fit
    out = run_stage(cfg, "toy_dsum")
    d = stage_dir(cfg, "toy_dsum")
    assert out["status"] == "follower" and toy_stages.ToyDistributedSum.calls == [(False, ["total"])]
    assert not d.exists() or not any(p.is_file() for p in d.rglob("*"))  # wrote nothing at all
    env.delenv("LOCAL_RANK")
    out = run_stage(cfg, "toy_dsum")
    assert out["status"] == "done" and toy_stages.ToyDistributedSum.calls[-1] == (True, ["total"])
    assert (d / "stage.json").exists()


def _srun(env, rank: int, job: str = "41") -> None:
    """Become task ``rank`` of 2 of srun job ``job``: its variables, and a fresh process's call count."""
    from gandiff import pipeline

    pipeline._CALLS[0] = 0
    env.setenv("SLURM_NTASKS", "2")
    env.setenv("SLURM_PROCID", str(rank))
    env.setenv("SLURM_JOB_ID", job)
    env.setenv("SLURM_STEP_ID", "0")


def test_ranks_started_together_follow_rank_0s_plan(env, tmp_path):
    cfg = _cfg(tmp_path)
    d = stage_dir(cfg, "toy_dsum")
    env.setenv("GANDIFF_FOLLOWER_WAIT_S", "0")
    _srun(env, 1)
    with pytest.raises(StageError, match="waited 0 s for rank 0's plan"):
        run_stage(cfg, "toy_dsum")  # rank 0 has not decided yet
    _srun(env, 0)
    run_stage(cfg, "toy_make")
    run_stage(cfg, "toy_dsum")
    assert [p.name for p in (d / ".plans").iterdir()] == ["slurm-41.0.0.1.json"]  # job.step.restart.call
    toy_stages.ToyDistributedSum.calls.clear()
    _srun(env, 1)
    assert run_stage(cfg, "toy_dsum")["status"] == "follower"
    assert toy_stages.ToyDistributedSum.calls == [(False, ["total"])]  # rank 0 planned: do "total"
    # Next job: rank 0 finds the stage done and plans nothing, although a follower alone would see
    # the same; with overwrite=true it plans everything again, which the follower could not know.
    _srun(env, 0, job="42")
    assert run_stage(cfg, "toy_dsum")["status"] == "up-to-date"
    _srun(env, 1, job="42")
    toy_stages.ToyDistributedSum.calls.clear()
    run_stage(cfg, "toy_dsum")
    assert toy_stages.ToyDistributedSum.calls == []
    again = compose([f"paths.root={tmp_path}", "logger=none", "identity.num=4", "overwrite=true"])
    _srun(env, 0, job="43")
    assert run_stage(again, "toy_dsum")["status"] == "done"
    _srun(env, 1, job="43")
    run_stage(again, "toy_dsum")
    assert toy_stages.ToyDistributedSum.calls[-1] == (False, ["total"])


def test_rank_0_failing_before_a_distributed_stage_releases_the_ranks_waiting_there(env, tmp_path):
    from gandiff.pipeline import run_pipeline

    cfg = _cfg(tmp_path)
    _srun(env, 0, job="50")
    with pytest.raises(StageError):  # toy_sum cannot find toy_make: rank 0 stops before toy_dsum
        run_pipeline(cfg, ["toy_sum", "toy_dsum"])
    _srun(env, 1, job="50")
    with pytest.raises(StageError, match="rank 0 stopped: toy_sum: StageError"):
        run_pipeline(cfg, ["toy_sum", "toy_dsum"])


def test_a_restarted_job_does_not_take_the_plans_of_the_first_attempt(env, tmp_path):
    cfg = _cfg(tmp_path)
    env.setenv("GANDIFF_FOLLOWER_WAIT_S", "0")
    _srun(env, 0, job="60")
    run_stage(cfg, "toy_make")
    run_stage(cfg, "toy_dsum")
    env.setenv("SLURM_RESTART_COUNT", "1")  # requeued: same job id and step, new attempt
    _srun(env, 1, job="60")
    with pytest.raises(StageError, match="waited 0 s for rank 0's plan"):
        run_stage(cfg, "toy_dsum")


def test_rank_0s_error_stops_the_ranks_waiting_for_it(env, tmp_path):
    cfg = _cfg(tmp_path)
    run_stage(cfg, "toy_make")
    run_stage(cfg, "toy_dsum")
    changed = compose([f"paths.root={tmp_path}", "logger=none", "identity.num=4", "force_inputs=[toy_make:nope]"])
    _srun(env, 0)
    with pytest.raises(StageError):
        run_stage(changed, "toy_dsum")  # rank 0 cannot find its input
    _srun(env, 1)
    with pytest.raises(StageError, match="rank 0 stopped: StageError: stage 'toy_make'"):
        run_stage(changed, "toy_dsum")


def test_shard_workers_are_not_followers(env, tmp_path):
    # srun -n2 gandiff toy_make shard.count=2 shard.index=$SLURM_PROCID: each task runs its own shard
    _srun(env, 1)
    cfg = compose([f"paths.root={tmp_path}", "logger=none", "identity.num=4", "shard.count=2", "shard.index=1"])
    assert run_stage(cfg, "toy_make")["status"] in ("shard-done", "done")
    assert (stage_dir(cfg, "toy_make") / "items").exists()


def test_a_follower_waits_for_the_leaders_upstream_then_gives_up(env, tmp_path):
    cfg = _cfg(tmp_path)
    env.setenv("LOCAL_RANK", "1")
    env.setenv("GANDIFF_FOLLOWER_WAIT_S", "0")
    with pytest.raises(StageError, match="rank 1 waited 0 s for stage 'toy_make'"):
        run_stage(cfg, "toy_dsum")


def test_a_relaunched_rank_finds_its_command(env):
    # Lightning re-runs [python, gandiff, *overrides, hydra.run.dir=...]: no command word.
    env.setenv(COMMAND_ENV, "train")
    # rank 0 never inherits a command (a leftover variable must not turn a typo into a run)
    assert _command(["trainer.devices=2", "hydra.run.dir=x"]) == ("trainer.devices=2", ["hydra.run.dir=x"])
    env.setenv("LOCAL_RANK", "1")
    assert _command(["trainer.devices=2", "hydra.run.dir=x"]) == ("train", ["trainer.devices=2", "hydra.run.dir=x"])
    assert _command(["evaluate", "a=1"]) == ("evaluate", ["a=1"])  # an explicit command always wins


@pytest.mark.parametrize("variables, token", [
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "2"}, "slurm-7.2.0"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),  # one task per job: nobody to follow a plan
    ({"TORCHELASTIC_RUN_ID": "exp3", "TORCHELASTIC_RESTART_COUNT": "1"}, "torchrun-exp3.1"),
    ({"TORCHELASTIC_RUN_ID": "none"}, None),  # torchrun's default id is the same in every job
])
def test_plans_are_named_only_by_ids_unique_to_the_launch(env, variables, token):
    from gandiff.distributed import job_token

    for k, v in variables.items():
        env.setenv(k, v)
    assert job_token() == token
