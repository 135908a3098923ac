"""Logging and progress: one format everywhere; progress bars on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"


def setup_logging(level: int | str = logging.INFO) -> None:
    """For entry points that do not go through Hydra (which configures logging from conf/hydra/)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=FORMAT, datefmt=DATEFMT, stream=sys.stderr)
    else:
        root.setLevel(level)
    # Libraries that are chatty at INFO.
    for name in ("httpx", "urllib3", "PIL", "matplotlib", "diffusers", "transformers", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "",
             logger: logging.Logger | None = None) -> Iterator[T]:
    """Iterate with a Rich progress bar on a terminal; elsewhere (CI, log files) log every ~10%."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task(desc, total=total)
            for x in iterable:
                yield x
                bar.advance(task)
        return
    log = logger or logging.getLogger("gandiff.progress")
    step = max(1, (total or 0) // 10)
    t0 = time.time()
    n = 0
    for x in iterable:
        yield x
        n += 1
        if total and (n % step == 0 or n == total):
            log.info("%s: %d/%d (%.1f s)", desc, n, total, time.time() - t0)


def rank_zero_info(logger: logging.Logger, msg: str, *args: Any) -> None:
    """Log once per job in distributed training (rank from the usual launcher variables)."""
    import os

    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", "0")))) == 0:
        logger.info(msg, *args)
