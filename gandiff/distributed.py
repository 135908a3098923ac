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
    for name, _ in _RANK_VARS:
        if _int(name):
            return _int("RANK") or _int(name)
    # One SLURM task per job (array jobs, submitit sweeps) is always rank 0, whatever SLURM_PROCID says.
    if _int("SLURM_NTASKS") > 1:
        return _int("SLURM_PROCID")
    return 0


def is_leader() -> bool:
    """True in the process that writes outputs: rank 0, or a process that is not part of a multi-process job."""
    return process_rank() == 0
