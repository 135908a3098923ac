"""Make a folder once, whichever of several concurrent shards gets there first.

Every shard of the identities stage needs the (sequential) selection. Shards share a file system, not a
process: the first creates ``<final>.claim`` with ``O_EXCL`` and computes while the others wait (a claim not
touched for ``stale_s`` of the waiter's own clock is taken over); the result is staged privately and published
by one ``rename(2)`` of the folder, which only one shard can win, so every shard reads the same folder.

Design: docs/design.md#compute-once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

POLL_S = 5.0  # how often a waiting shard looks for the published folder
HEARTBEAT_S = 30.0  # how often the claimer touches its claim
STALE_S = 300.0  # a claim untouched this long (waiter's clock) belongs to a dead process; > NFS attribute caching


def publish_dir(staging: Path, final: Path, marker: str) -> bool:
    """Rename the complete folder ``staging`` onto ``final``; False (and ``staging`` removed) when another
    process published first. An incomplete ``final`` (no ``marker``: left by an older, non-atomic writer)
    is removed and replaced."""
    for _ in range(2):
        try:
            os.rename(staging, final)
            return True
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if (final / marker).exists():
            shutil.rmtree(staging, ignore_errors=True)
            return False
        log.warning("%s: incomplete (no %s): replacing it", final, marker)
        shutil.rmtree(final, ignore_errors=True)
    raise RuntimeError(f"{final}: could not publish {staging} (the folder keeps reappearing without {marker})")


def _try_claim(claim: Path, note: dict) -> bool:
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(note, f)
    return True


@contextlib.contextmanager
def _heartbeat(claim: Path, every_s: float) -> Iterator[None]:
    """Touch ``claim`` every ``every_s`` seconds until the block ends (so waiters know the claimer lives)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(OSError):
                os.utime(claim)

    thread = threading.Thread(target=beat, name=f"heartbeat:{claim.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _claim_state(claim: Path) -> tuple[int, int] | None:
    try:
        st = claim.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def compute_once(final: str | os.PathLike, marker: str, compute: Callable[[Path], None], who: str = "",
                 poll_s: float = POLL_S, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> bool:
    """Ensure the folder ``final`` exists complete (``final/marker`` present); True when this call made it.

    ``compute(staging)`` writes every file of the folder into the empty folder ``staging``; the marker is
    only looked for, so its order among the writes does not matter. ``who`` names this process in logs
    and in the claim. ``sleep`` and ``clock`` are injectable for tests.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    claim = final.with_name(final.name + ".claim")
    note = {"host": socket.gethostname(), "pid": os.getpid(), "who": who, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "token": secrets.token_hex(8)}
    seen, since, announced = None, clock(), False
    while True:
        if (final / marker).exists():
            return False
        if _try_claim(claim, note):
            break
        state = _claim_state(claim)
        if state is None:  # the claimer just finished or failed: look again
            continue
        if state != seen:
            seen, since = state, clock()
        elif clock() - since >= stale_s:
            log.warning("%s: claim %s untouched for %.0f s: its process is gone, %s takes over",
                        final.name, claim, clock() - since, who or "this process")
            with contextlib.suppress(FileNotFoundError):
                claim.unlink()
            continue
        if not announced:
            with contextlib.suppress(OSError, ValueError):
                holder = json.loads(claim.read_text())
                log.info("%s: %s waits for %s (pid %s on %s, since %s)", final.name, who or "this process",
                         holder.get("who") or "another process", holder.get("pid"), holder.get("host"),
                         holder.get("time"))
            announced = True
        sleep(poll_s)

    staging = final.with_name(f".{final.name}.staging-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with _heartbeat(claim, heartbeat_s):
            staging.mkdir()
            compute(staging)
            if not (staging / marker).exists():
                raise RuntimeError(f"{final}: the computation wrote no {marker}")
            made = publish_dir(staging, final, marker)
        if not made:
            log.info("%s: another process published first; using its copy", final)
        return made
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _release(claim, note["token"])


def _release(claim: Path, token: str) -> None:
    """Remove the claim if it is still ours (a waiter may have taken it over after a long stall)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(claim.read_text()).get("token") == token:
            claim.unlink()
