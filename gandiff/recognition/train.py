"""Run a recognizer training: Lightning Trainer, checkpoints, resume, history, exports.

``fit_recognizer`` takes a built ``RecognitionModule`` and ``FaceDataModule`` and explicit trainer
settings, trains (resuming from the newest checkpoint in ``out_dir/checkpoints`` if there is one), then
writes ``backbone.pt``, ``backbone.onnx`` and ``metrics.json`` (loss curve, validation accuracies,
throughput, skipped images). The train stage and the benchmark script both call it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from gandiff.artifacts import atomic_write_json
from gandiff.recognition.checkpoints import export_onnx, read_checkpoint, save_backbone
from gandiff.recognition.datamodule import FaceDataModule
from gandiff.recognition.module import RecognitionModule

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


class TrainingHistory(Callback):
    """Loss every ``every`` steps, validation rows, images/s (training time only); saved in checkpoints so a
    resumed run's history is whole. Sends the same numbers to a ``gandiff.tracking.Tracker``."""

    def __init__(self, every: int = 10, tracker: Any = None):
        self.every, self.tracker = every, tracker
        self.loss: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.train_images = 0
        self._t: float | None = None
        self._images_since = 0

    @property
    def state_key(self) -> str:
        return "TrainingHistory"

    def state_dict(self) -> dict[str, Any]:
        return {"loss": list(self.loss), "train_seconds": self.train_seconds, "train_images": self.train_images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss = list(state.get("loss", []))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.train_images = int(state.get("train_images", 0))

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
            loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).item()  # syncs the device
            self._tick()
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.loss.append({"step": int(step), "epoch": int(trainer.current_epoch), "loss": loss, "lr": float(lr)})
            if trainer.is_global_zero:
                ips = self.train_images / self.train_seconds if self.train_seconds > 0 else float("nan")
                log.info("step %d epoch %d: loss %.4f lr %.4g (%.0f images/s)", step, trainer.current_epoch, loss,
                         lr, ips)
                if self.tracker is not None:
                    self.tracker.log_metrics({"train/loss": loss, "train/lr": float(lr)}, step=int(step))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
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
        self._tick()

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0


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
                  tracker: Any = None, callbacks: list[Callback] | None = None) -> tuple[L.Trainer, TrainingHistory]:
    history = TrainingHistory(every=log_every_n_steps, tracker=tracker)
    # One retained checkpoint: the new file is complete before the old one is removed.
    ckpt = ModelCheckpoint(dirpath=out_dir / CHECKPOINT_DIR, filename="epoch{epoch:03d}-step{step:08d}",
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
        callbacks=[history, *(callbacks or []), ckpt],
        enable_progress_bar=sys.stderr.isatty(), enable_model_summary=False, default_root_dir=str(out_dir),
    )
    return trainer, history


def fit_recognizer(module: RecognitionModule, datamodule: FaceDataModule, out_dir: str | Path, *,
                   accelerator: str = "auto", devices: Any = "auto", strategy: str = "auto", num_nodes: int = 1,
                   precision: str = "32-true", max_epochs: int = 1, max_steps: int = -1,
                   gradient_clip_val: float = 0.0, log_every_n_steps: int = 10, val_every_n_epochs: int = 1,
                   checkpoint_every_n_steps: int = 0, deterministic: bool = False, resume: bool = True,
                   export: bool = True, tracker: Any = None, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train, export and write ``metrics.json`` under ``out_dir``; returns the metrics (see module doc)."""
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
        "images_per_second": round(history.images_per_second, 2),
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
    return metrics
