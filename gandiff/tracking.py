"""Experiment tracking: Weights & Biases (offline unless told otherwise) or plain CSV/JSON files.

A tracker is opened once per CLI job and closed in ``finally`` (``with open_tracker(...)``), so a job of
a sweep that fails still closes its W&B run and the next job starts a fresh one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    """The plain interface every tracker has; this base class records nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_summary(self, stage: str, summary: dict[str, Any]) -> None: ...

    def log_image(self, key: str, path: str | os.PathLike, caption: str = "") -> None: ...

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None: ...

    def log_artifact_ref(self, name: str, path: str | os.PathLike, kind: str = "dataset") -> None: ...

    def finish(self, failed: bool = False) -> None: ...


class CSVTracker(Tracker):
    """Metrics to ``metrics.csv`` (one row per call, columns grow as keys appear), summaries to JSON."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._rows.append({"time": round(time.time(), 3), "step": step, **metrics})
        keys: list[str] = []
        for r in self._rows:
            keys += [k for k in r if k not in keys]
        with open(self.dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self._rows)

    def log_summary(self, stage: str, summary: dict[str, Any]) -> None:
        path = self.dir / "summary.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[stage] = summary
        path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        (self.dir / f"{key.replace('/', '_')}.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")


class WandbTracker(Tracker):
    def __init__(self, project: str, entity: str | None, mode: str, name: str, out_dir: str | os.PathLike,
                 config: dict[str, Any], tags: list[str]):
        import wandb

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        # The user's WANDB_MODE wins; otherwise the config's mode (offline by default).
        self.run = wandb.init(project=project, entity=entity, name=name, dir=str(out_dir), config=config,
                              tags=tags, mode=os.environ.get("WANDB_MODE", mode), reinit="finish_previous")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, stage: str, summary: dict[str, Any]) -> None:
        for k, v in summary.items():
            if isinstance(v, (int, float, str, bool)):
                self.run.summary[f"{stage}/{k}"] = v

    def log_image(self, key: str, path: str | os.PathLike, caption: str = "") -> None:
        self.run.log({key: self._wandb.Image(str(path), caption=caption)})

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            cols = list(rows[0])
            self.run.log({key: self._wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})

    def log_artifact_ref(self, name: str, path: str | os.PathLike, kind: str = "dataset") -> None:
        art = self._wandb.Artifact(name, type=kind)
        art.add_reference(Path(path).resolve().as_uri())
        self.run.log_artifact(art)

    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def make_tracker(kind: str, out_dir: str | os.PathLike, name: str, project: str = "gandiff",
                 entity: str | None = None, mode: str = "offline", config: dict[str, Any] | None = None,
                 tags: list[str] | None = None) -> Tracker:
    if kind == "none":
        return Tracker()
    if kind == "csv":
        return CSVTracker(out_dir)
    if kind == "wandb":
        return WandbTracker(project, entity, mode, name, out_dir, config or {}, list(tags or []))
    raise ValueError(f"logger.kind={kind!r}: must be wandb, csv or none")


@contextlib.contextmanager
def open_tracker(kind: str, out_dir: str | os.PathLike, name: str, **kwargs: Any) -> Iterator[Tracker]:
    tracker = make_tracker(kind, out_dir, name, **kwargs)
    failed = True
    try:
        yield tracker
        failed = False
    finally:
        try:
            tracker.finish(failed=failed)
        except Exception as e:  # a tracker that fails to close must not hide the job's own error
            log.warning("closing the %s tracker failed: %s", kind, e)
