"""Which process of a multi-process job this is, from the launchers' environment variables.

A DDP job runs the same command line in every process: Lightning's launcher re-runs it for ranks 1..N-1
(``LOCAL_RANK``, ``NODE_RANK``), torchrun sets ``RANK``, ``srun`` with several tasks sets
``SLURM_PROCID``. Only the *leader* (rank 0 of the whole job) writes stage folders, records and
trackers; the other processes are *followers*: they take part in the stages that declare
``distributed = True`` (recognizer training) and skip every other stage, which the leader runs alone.
"""

from __future__ import annotations

import os

# (variable, what sets it); a non-zero value in any of them means "not the leader"
_RANK_VARS = (("RANK", "torchrun"), ("LOCAL_RANK", "Lightning / torchrun"), ("NODE_RANK", "Lightning"),
              ("GROUP_RANK", "torchrun"))


def _int(name: str) -> int:
    value = os.environ.get(name, "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: must be an integer rank") from None


def process_rank() -> int:
    """This process's rank in its job (0 when not launched as one of several processes)."""
    if "RANK" in os.environ:  # torchrun / torch.distributed: the global rank, whatever else is set
        return _int("RANK")
    for name, _ in _RANK_VARS[1:]:
        if _int(name):
            return _int(name)
    # One SLURM task per job (array jobs, submitit sweeps) is always rank 0, whatever SLURM_PROCID says.
    if _int("SLURM_NTASKS") > 1:
        return _int("SLURM_PROCID")
    return 0


def launched_together() -> bool:
    """True when every rank was started at once (torchrun, srun with several tasks), not by rank 0's Trainer."""
    return _int("WORLD_SIZE") > 1 or _int("SLURM_NTASKS") > 1


def job_token() -> str | None:
    """An id that every rank of this launch shares and no other launch has (None when the launcher gives
    none: then ranks > 0 decide for themselves). SLURM: job, step and requeue count; torchrun: the
    rendezvous id (``--rdzv-id``; torchrun's default "none" is not unique) and its restart count."""
    env = os.environ
    if env.get("SLURM_JOB_ID") and _int("SLURM_NTASKS") > 1:
        return f"slurm-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '0')}.{env.get('SLURM_RESTART_COUNT', '0')}"
    run_id = env.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return None


def is_leader() -> bool:
    """True in the process that writes outputs: rank 0, or a process that is not part of a multi-process job."""
    return process_rank() == 0
