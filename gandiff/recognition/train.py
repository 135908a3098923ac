"""Run a recognizer training: Lightning Trainer, checkpoints, resume, history, exports.

``fit_recognizer`` takes a built ``RecognitionModule`` and ``FaceDataModule`` and explicit trainer
settings, trains (resuming from the newest checkpoint in ``out_dir/checkpoints`` if there is one), then
writes ``backbone.pt``, ``backbone.onnx`` and ``metrics.json`` (loss curve, validation accuracies,
skipped images). The train stage and the benchmark script both call it.

Two identical trainings write the same bytes, wherever their folders are: ``metrics.json`` and the
checkpoints hold no timings (throughput is returned under ``timings``, for ``stage.json``) and the
checkpoints name their own files relative to their folder (``RelocatableCheckpoint``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gandiff.artifacts import atomic_write_json
from gandiff.recognition.checkpoints import export_onnx, read_checkpoint, save_backbone
from gandiff.recognition.datamodule import FaceDataModule
from gandiff.recognition.module import RecognitionModule

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


class TrainingHistory(Callback):
    """Loss every ``every`` steps, validation rows, images/s (training time only). The loss history is saved
    in checkpoints so a resumed run's history is whole; the clock is not (a checkpoint's bytes must not depend
    on the machine's speed), so after a resume images/s covers this process's steps only. Sends the same
    numbers to a ``gandiff.tracking.Tracker``."""

    def __init__(self, every: int = 10, tracker: Any = None):
        self.every, self.tracker = every, tracker
        self.loss: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.train_images = 0
        self._t: float | None = None
        self._images_since = 0
        # Losses of logged steps still on their way to the host: (row, host tensor, CUDA event or None).
        self._pending: deque[tuple[dict[str, Any], torch.Tensor, Any]] = deque()

    @property
    def state_key(self) -> str:
        return "TrainingHistory"

    def state_dict(self) -> dict[str, Any]:
        self._drain(wait=True)  # a checkpoint holds every logged step
        return {"loss": list(self.loss)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss = list(state.get("loss", []))  # an older checkpoint's train_seconds: speed is not resumed

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._t is not None:
            self.train_seconds += now - self._t
        self._t = now

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._t is None:
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = len(batch["label"]) * trainer.world_size
        self.train_images += n
        self._images_since += n
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            # No host sync here: on CUDA the loss is copied to pinned memory behind the step's kernels and
            # read once the copy's event has fired (a later step, or at a checkpoint / validation / the end).
            loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
            event = None
            if loss.is_cuda:
                host = torch.empty(loss.shape, dtype=loss.dtype, pin_memory=True)
                host.copy_(loss, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                loss = host
            self._tick()
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            row = {"step": int(step), "epoch": int(trainer.current_epoch), "lr": float(lr),
                   "_ips": self.train_images / self.train_seconds if self.train_seconds > 0 else float("nan"),
                   "_zero": trainer.is_global_zero}
            self._pending.append((row, loss, event))
        if self._pending:
            self._drain(wait=False)

    def _drain(self, wait: bool) -> None:
        """Record the logged losses whose values have reached the host (all of them when ``wait``)."""
        while self._pending:
            row, host, event = self._pending[0]
            if event is not None and not event.query():
                if not wait:
                    return
                event.synchronize()
            self._pending.popleft()
            ips, zero = row.pop("_ips"), row.pop("_zero")
            loss = float(host)
            self.loss.append({"step": row["step"], "epoch": row["epoch"], "loss": loss, "lr": row["lr"]})
            if zero:
                log.info("step %d epoch %d: loss %.4f lr %.4g (%.0f images/s)", row["step"], row["epoch"], loss,
                         row["lr"], ips)
                if self.tracker is not None:
                    self.tracker.log_metrics({"train/loss": loss, "train/lr": row["lr"]}, step=row["step"])

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._drain(wait=True)
        if trainer.training or trainer.state.fn == "fit":
            self._tick()  # training time up to here counts; validation time does not

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t = time.perf_counter()
        rows = getattr(pl_module, "val_history", [])
        if rows and trainer.is_global_zero:
            row = rows[-1]
            log.info("validation at step %d: %s", row["step"],
                     ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("accuracy_mean")))
            if self.tracker is not None:
                self.tracker.log_metrics({f"val/{k}": v for k, v in row.items() if k not in ("epoch", "step")},
                                         step=int(row["step"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._drain(wait=True)
        self._tick()

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0


class HistoryProgressBar(TQDMProgressBar):
    """Lightning's progress bar, showing the newest loss TrainingHistory has on the host.

    The module logs no progress-bar value: Lightning would turn it into a float (``.item()``, a device
    sync) after every step. The loss shown here was fetched without one, at a log step.
    """

    def __init__(self, history: TrainingHistory, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.history = history

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if self.history.loss:
            items["loss"] = f"{self.history.loss[-1]['loss']:.4g}"
        return items


class RelocatableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose saved state names its files relative to its folder.

    Lightning stores the absolute ``dirpath`` and ``best_model_path`` in every checkpoint, so two identical
    runs under different roots would write different bytes, and a moved run folder would lose track of the
    checkpoint it must replace. Here they are saved as names inside ``dirpath`` and made absolute again on
    load (absolute paths of older checkpoints load as they are). The state key stays ``ModelCheckpoint``'s.
    """

    _PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _relative(self, path: str) -> str:
        if not path or self.dirpath is None:
            return path
        p, d = Path(path), Path(self.dirpath)
        return p.relative_to(d).as_posix() if p.is_relative_to(d) else path

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["dirpath"] = "."
        for k in self._PATHS:
            state[k] = self._relative(state[k])
        state["best_k_models"] = {self._relative(k): v for k, v in state["best_k_models"].items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath") == "." and self.dirpath is not None:
            def absolute(p: str) -> str:
                return str(Path(self.dirpath) / p) if p and not Path(p).is_absolute() else p

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: absolute(state_dict.get(k, "")) for k in self._PATHS},
                          "best_k_models": {absolute(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)


def _canonical(obj: Any) -> Any:
    """``obj`` with fresh containers and interned strings, for pickling (see ``CanonicalCheckpointIO``)."""
    if isinstance(obj, str):
        return sys.intern(obj) if type(obj) is str else obj
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    if isinstance(obj, dict):
        try:
            new = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        except TypeError:  # a dict subclass that cannot be rebuilt from pairs: leave it as it is
            return obj
        if hasattr(obj, "_metadata"):  # a module state_dict's per-module versions
            new._metadata = _canonical(obj._metadata)
        return new
    return obj


class CanonicalCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer (``torch.save`` through a buffer), on a canonical copy of the checkpoint.

    Pickle writes an object seen before as a reference to it, by identity: a resumed run, whose states were
    unpickled from a checkpoint, holds equal strings as distinct objects where an uninterrupted run shares
    one, and so would write other bytes for the same content. Fresh containers and interned strings make the
    bytes a function of the content alone.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        super().save_checkpoint(_canonical(checkpoint), path, storage_options=storage_options)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that loads (an interrupted save leaves a partial file: skip it)."""
    for p in sorted(ckpt_dir.glob("*.ckpt"), key=lambda q: q.stat().st_mtime, reverse=True):
        try:
            read_checkpoint(p)
            return p
        except (ValueError, RuntimeError, EOFError) as e:
            log.warning("ignoring checkpoint %s: %s", p, e)
    return None


def build_trainer(out_dir: Path, *, accelerator: str = "auto", devices: Any = "auto", strategy: str = "auto",
                  num_nodes: int = 1, precision: str = "32-true", max_epochs: int = 1, max_steps: int = -1,
                  gradient_clip_val: float = 0.0, log_every_n_steps: int = 10, val_every_n_epochs: int = 1,
                  checkpoint_every_n_steps: int = 0, deterministic: bool = False, validate: bool = True,
                  tracker: Any = None, callbacks: list[Callback] | None = None,
                  progress_bar: bool | None = None) -> tuple[L.Trainer, TrainingHistory]:
    """The Trainer ``fit_recognizer`` runs. ``progress_bar``: shown when stderr is a terminal unless said
    (``HistoryProgressBar``); off, nothing is drawn or formatted per step."""
    history = TrainingHistory(every=log_every_n_steps, tracker=tracker)
    bar = sys.stderr.isatty() if progress_bar is None else progress_bar
    # One retained checkpoint: the new file is complete before the old one is removed.
    ckpt = RelocatableCheckpoint(dirpath=out_dir / CHECKPOINT_DIR, filename="epoch{epoch:03d}-step{step:08d}",
                           auto_insert_metric_name=False, save_top_k=1, monitor=None,
                           every_n_train_steps=checkpoint_every_n_steps or None,
                           every_n_epochs=None if checkpoint_every_n_steps else 1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes, precision=precision,
        max_epochs=max_epochs, max_steps=max_steps, gradient_clip_val=gradient_clip_val or None,
        log_every_n_steps=log_every_n_steps, check_val_every_n_epoch=val_every_n_epochs,
        limit_val_batches=1.0 if validate else 0, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # FaceDataModule's SeededSampler splits ranks itself (and resumes)
        deterministic=deterministic, benchmark=not deterministic, logger=False,
        callbacks=[history, *(callbacks or []), ckpt, *([HistoryProgressBar(history)] if bar else [])],
        plugins=[CanonicalCheckpointIO()],
        enable_progress_bar=bar, enable_model_summary=False, default_root_dir=str(out_dir),
    )
    return trainer, history


def fit_recognizer(module: RecognitionModule, datamodule: FaceDataModule, out_dir: str | Path, *,
                   accelerator: str = "auto", devices: Any = "auto", strategy: str = "auto", num_nodes: int = 1,
                   precision: str = "32-true", max_epochs: int = 1, max_steps: int = -1,
                   gradient_clip_val: float = 0.0, log_every_n_steps: int = 10, val_every_n_epochs: int = 1,
                   checkpoint_every_n_steps: int = 0, deterministic: bool = False, resume: bool = True,
                   export: bool = True, tracker: Any = None, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train, export and write ``metrics.json`` under ``out_dir``; returns the metrics (see module doc) and
    ``timings`` (images/s of the training steps this process ran), which ``metrics.json`` leaves out."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule.prepare_split()
    trainer, history = build_trainer(
        out_dir, accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        precision=precision, max_epochs=max_epochs, max_steps=max_steps, gradient_clip_val=gradient_clip_val,
        log_every_n_steps=log_every_n_steps, val_every_n_epochs=val_every_n_epochs,
        checkpoint_every_n_steps=checkpoint_every_n_steps, deterministic=deterministic,
        validate=bool(datamodule.val_sets), tracker=tracker, callbacks=callbacks)
    ckpt_path = latest_checkpoint(out_dir / CHECKPOINT_DIR) if resume else None
    if ckpt_path is not None:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if trainer.is_global_zero:
        # Lightning never deletes the checkpoint it resumed from: one checkpoint is kept, as in a run never killed.
        kept = trainer.checkpoint_callback.best_model_path
        for p in (out_dir / CHECKPOINT_DIR).glob("*.ckpt"):
            if kept and p != Path(kept):
                p.unlink()
    if datamodule.val_sets and (not module.val_history or module.val_history[-1]["step"] != trainer.global_step):
        trainer.validate(module, datamodule=datamodule, verbose=False)  # the final model is always validated

    metrics = {
        "status": "trained",
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "num_classes": int(datamodule.num_classes),
        "num_train_images": len(datamodule.split.train),
        "num_heldout_images": len(datamodule.split.heldout),
        "val_sets": {v.name: len(v.issame) for v in datamodule.val_sets},
        "final_loss": history.loss[-1]["loss"] if history.loss else None,
        "loss": history.loss,
        "val": list(module.val_history),
        "world_size": int(trainer.world_size),
        "skipped_images": int(module.skipped_images),
        "skipped_examples": list(module.skipped_examples),
        "device": str(module.device),
        "precision": str(trainer.precision),
    }
    heldout = [r["heldout/accuracy_mean"] for r in module.val_history if "heldout/accuracy_mean" in r]
    metrics["val_accuracy"] = heldout[-1] if heldout else None
    if trainer.is_global_zero and export:
        save_backbone(module.backbone, out_dir / "backbone.pt")
        export_onnx(module.backbone, out_dir / "backbone.onnx")
        atomic_write_json(out_dir / "metrics.json", metrics)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {**metrics, "timings": {"train_images_per_second": round(history.images_per_second, 2),
                                   "train_seconds": round(history.train_seconds, 3)}}
