"""The recognizer LightningModule: an injected backbone, a margin head, cross-entropy, SGD/AdamW.

The backbone and head are built outside (``build_backbone`` / ``build_head``) and passed in, so any
``nn.Module`` mapping ``(B, 3, 112, 112)`` to ``(B, D)`` trains here; their specs are saved as plain-type
hyper-parameters, so checkpoints load with ``weights_only=True`` (``load_recognizer``). On GPU: uint8
batches normalised on the device, channels-last, ``bf16-mixed``, optional ``compile`` (backbone and head).
No host sync per step: the loss is logged on ``log_every_n_steps`` steps only and the NaN check reads the
last ``nan_check_every`` (default 50) losses at once; a non-finite loss raises ``NonFiniteLossError`` naming
the first bad step.

Design: docs/design.md#the-recognizer-module.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gandiff.errors import UserError

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "poly", power: float = 2.0,
              milestones: tuple[int, ...] = (), gamma: float = 0.1) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up from ~0 to 1 over ``warmup_steps``, then ``poly``: ``(1 - p)^power`` (arcface_torch's
    PolyScheduler, power 2; train_v2's PolynomialLRWarmup, power 1), ``cosine``: ``(1 + cos(pi p)) / 2``,
    ``constant``, where ``p`` is the fraction of the post-warm-up steps done, or ``step``: ``gamma`` to the
    number of ``milestones`` (optimiser steps) reached (SOTA-FR's ``reduce_lr``: lr /= 10 at epoch starts).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    span = max(1, total_steps - warmup_steps)
    p = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "poly":
        return (1.0 - p) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"trainer.schedule={schedule!r}: must be poly, cosine, constant or step")


def normalize_faces(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [-1, 1]: insightface's ``(x - 127.5) / 127.5``."""
    return (x.float() - 127.5) / 127.5


class RecognitionModule(L.LightningModule):
    def __init__(self, backbone: nn.Module, head: nn.Module, backbone_spec: dict[str, Any] | None = None,
                 head_spec: dict[str, Any] | None = None, optimizer: str = "sgd", learning_rate: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4, warmup_epochs: float = 1.0,
                 schedule: str = "poly", poly_power: float = 2.0, nan_check_every: int = 50,
                 compile: bool = False, val_nfolds: int = 10, lr_milestones: list[float] | None = None,
                 lr_gamma: float = 0.1, bn_weight_decay: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = head
        # Plain types only (ints, floats, strings, dicts of them): checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["backbone", "head"])
        self._recent: deque[tuple[int, int, torch.Tensor, torch.Tensor]] = deque(maxlen=nan_check_every)
        self._val_embeddings: dict[int, list[torch.Tensor]] = {}
        self.skipped_images = 0
        self.skipped_examples: list[str] = []
        self.val_history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            # nn.Module.compile is in place: the state_dict keys (insightface's backbone names, the head's
            # ``weight`` / AdaFace buffers) stay as they are, so checkpoints load either way.
            self.backbone.compile()
            self.head.compile()
            self._compiled = True

    def on_fit_start(self) -> None:
        if self.device.type == "cuda":
            self.backbone.to(memory_format=torch.channels_last)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, 112, 112) on the module's device -> embeddings (B, D), not normalised."""
        x = normalize_faces(images)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        emb = self.embed(batch["image"])  # (B, D)
        logits = self.head(emb, batch["label"])  # (B, C) float32
        loss = F.cross_entropy(logits, batch["label"])
        self._watch_loss(loss, batch, batch_idx)
        if batch.get("skipped"):
            self.skipped_images += int(batch["skipped"])
            if len(self.skipped_examples) < 5:
                self.skipped_examples += list(batch.get("skipped_examples", []))[: 5 - len(self.skipped_examples)]
                log.warning("skipped %d unreadable image(s), e.g. %s", batch["skipped"], batch["skipped_examples"][0])
        if self._is_log_step():
            # On log steps only, and not to the progress bar: Lightning turns a ``prog_bar`` value into a
            # Python float (``.item()``, a device sync) on every step after it was first logged. The bar shows
            # TrainingHistory's loss instead, fetched without a sync (gandiff.recognition.train).
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, batch_size=len(emb))
        return loss

    def _is_log_step(self) -> bool:
        """Whether this training step's loss is logged: the optimiser step it completes is a multiple of
        ``log_every_n_steps`` (TrainingHistory's rule), or the last of ``max_steps``."""
        trainer = self._trainer
        if trainer is None:
            return True
        step, every = self.global_step + 1, max(1, int(trainer.log_every_n_steps))
        return step % every == 0 or step == trainer.max_steps

    def _watch_loss(self, loss: torch.Tensor, batch: dict[str, Any], batch_idx: int) -> None:
        self._recent.append((int(self.global_step), batch_idx, loss.detach(), batch["index"]))
        if len(self._recent) == self._recent.maxlen:
            self._check_recent_losses()

    def on_train_epoch_end(self) -> None:
        self._check_recent_losses()  # the steps since the last check

    def _check_recent_losses(self) -> None:
        if not self._recent:
            return
        losses = torch.stack([r[2] for r in self._recent])
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):  # one device sync per check
            step, b_idx, value, indices = self._recent[int(bad.nonzero()[0, 0])]
            ids = indices.tolist()
            raise NonFiniteLossError(
                f"loss is {float(value)} at step {step} (epoch {self.current_epoch}, batch {b_idx} of the epoch); "
                f"dataset indices of that batch: {ids[:32]}{' ...' if len(ids) > 32 else ''}. Lower "
                "trainer.learning_rate, check those images, or use precision=32-true to find the cause")
        self._recent.clear()

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # arcface_torch clips the backbone's gradient norm only (at 5), not the class centres'.
        if gradient_clip_val:
            nn.utils.clip_grad_norm_(self.backbone.parameters(), gradient_clip_val)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = self.parameter_groups(float(hp.weight_decay), bool(hp.get("bn_weight_decay", True)))
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.learning_rate, momentum=hp.momentum, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"trainer.optimizer={hp.optimizer!r}: must be sgd or adamw")
        per_epoch, total = self._schedule_steps()
        warmup = round(hp.warmup_epochs * per_epoch)
        milestones = tuple(round(float(m) * per_epoch) for m in (hp.get("lr_milestones") or ()))
        gamma = float(hp.get("lr_gamma", 0.1))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, warmup, total, hp.schedule, hp.poly_power, milestones, gamma))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def parameter_groups(self, weight_decay: float, bn_weight_decay: bool = True) -> list[dict[str, Any]]:
        """Optimiser parameter groups. ``bn_weight_decay=False``: BatchNorm weights and biases in a group with
        no weight decay (SOTA-Face-Recognition-Train-and-Test's ``separate_bn_param``, the DataCV recipe);
        arcface_torch decays every parameter."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        if bn_weight_decay:
            return [{"params": trainable}]
        bn = {id(p) for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in m.parameters(recurse=False) if p.requires_grad}
        return [{"params": [p for p in trainable if id(p) not in bn], "weight_decay": weight_decay},
                {"params": [p for p in trainable if id(p) in bn], "weight_decay": 0.0}]

    def _schedule_steps(self) -> tuple[int, int]:
        """(optimiser steps per epoch, total steps) for the LR schedule.

        Read from the data module when it says (``steps_per_epoch``), not from
        ``trainer.estimated_stepping_batches``: that builds the train loader before a checkpoint's loader
        state is restored, which would make a mid-epoch resume replay the epoch from its start.
        """
        trainer = self.trainer
        per_epoch = getattr(trainer.datamodule, "steps_per_epoch", None) if trainer.datamodule is not None else None
        if per_epoch is None:
            total = int(trainer.estimated_stepping_batches)
            return max(1, total // max(1, trainer.max_epochs or 1)), total
        per_epoch = max(1, int(per_epoch) // max(1, trainer.accumulate_grad_batches))
        total = per_epoch * max(1, trainer.max_epochs or 1) if (trainer.max_epochs or -1) > 0 else trainer.max_steps
        if trainer.max_steps > 0:
            total = min(total, trainer.max_steps)
        return per_epoch, int(total)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        # insightface's protocol: the embedding of an image plus that of its mirror image.
        emb = self.embed(batch) + self.embed(torch.flip(batch, dims=[3]))  # (B, D)
        self._val_embeddings.setdefault(dataloader_idx, []).append(emb.float().cpu())

    def on_validation_epoch_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        sets = getattr(dm, "val_sets", [])
        row: dict[str, Any] = {"epoch": int(self.current_epoch), "step": int(self.global_step)}
        for i, vs in enumerate(sets):
            chunks = self._val_embeddings.get(i)
            if not chunks:
                continue
            emb = F.normalize(torch.cat(chunks), dim=1).numpy()[vs.pair_index]  # (2P, D) in pair order
            metrics = verification_metrics(emb, vs.issame, self.hparams.val_nfolds)
            for k in ("accuracy_mean", "accuracy_std"):
                if k in metrics:
                    # Every rank embeds every pair (no distributed sampler): the value is the same on all
                    # ranks, and sync_dist's mean of equal values says so to Lightning at no cost.
                    self.log(f"val/{vs.name}/{k}", float(metrics[k]), batch_size=len(vs), sync_dist=True)
                    row[f"{vs.name}/{k}"] = float(metrics[k])
        self._val_embeddings.clear()
        if len(row) > 2 and not self.trainer.sanity_checking:
            self.val_history.append(row)

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gandiff"] = {"skipped_images": int(self.skipped_images), "val_history": list(self.val_history)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gandiff", {})
        self.skipped_images = int(state.get("skipped_images", 0))
        self.val_history = list(state.get("val_history", []))


def verification_metrics(embeddings: np.ndarray, issame: np.ndarray, nfolds: int = 10) -> dict[str, Any]:
    """The 10-fold verification protocol on pair-ordered, L2-normalised embeddings (2P, D).

    Uses ``gandiff.evaluation.verification.evaluate_verification`` (the evaluation package's protocol).
    """
    from gandiff.evaluation.verification import evaluate_verification

    return evaluate_verification(embeddings, np.asarray(issame, bool), nfolds=nfolds)
