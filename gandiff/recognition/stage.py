"""The ``train`` stage: a recognizer trained on the export stage's dataset proves (or not) its worth.

One item, ``model``, in ``train/<key>/``: ``backbone.pt`` (insightface state dict), ``backbone.onnx``,
``metrics.json`` (loss curve, validation accuracy on the dataset's own held-out pairs and any
``trainer.val_bins``, skipped images; no timings, those are in ``stage.json``) and the latest Lightning
checkpoint, from which a killed run resumes. A dataset with fewer than two identities cannot train a margin
head: ``trainer.on_empty=skip`` (the default) records why and the run goes on; ``error`` stops it.

Design: docs/design.md#the-train-stage.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gandiff.artifacts import atomic_write_json, read_json, write_table
from gandiff.pipeline import Stage, StageContext, StageError
from gandiff.schema import plain

log = logging.getLogger(__name__)

MODEL = "model"


def open_training_data(data: str, export_dir: Path) -> tuple[Any, str]:
    """(dataset, where) for ``trainer.data``: ``export`` -> the export stage's folder, else a path
    (``where`` is the folder's path, for messages)."""
    from gandiff.datasets.readers import open_dataset

    where = export_dir if data == "export" else Path(data).expanduser()
    if data != "export" and not where.exists():
        raise StageError(f"trainer.data={data!r}: no such dataset (give 'export' or a path to an image "
                         "folder, a train.rec folder or WebDataset shards)")
    return open_dataset(where), str(where)


def builder_spec(settings: Any, builder: Callable[..., Any], **given: Any) -> dict[str, Any]:
    """The keyword arguments of ``builder`` (``build_backbone``, ``build_head``) as a plain dict: ``given`` first,
    then every field of the ``settings`` dataclass (``RecognizerConfig``) that ``builder`` takes, in the schema's
    order. Plain values (lists copied): it is saved in the checkpoint's hyper-parameters."""
    takes = inspect.signature(builder).parameters
    return {**given, **{k: v for k, v in plain(settings).items() if k in takes and k not in given}}


class TrainStage(Stage):
    name = "train"
    upstream = ("export",)
    example = "gandiff train recognizer=iresnet50 trainer.max_epochs=20"
    config_keys = ("recognizer", "trainer")
    # Speed only: workers, compilation, the validation batch size, how often the loss is checked for NaN.
    ignore_keys = ("trainer.num_workers", "trainer.compile", "trainer.val_batch_size", "trainer.nan_check_every")
    distributed = True  # every DDP rank trains (trainer.strategy=ddp); rank 0 alone writes

    def items(self, ctx: StageContext) -> list[str]:
        return [MODEL]

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        try:
            dataset, where = open_training_data(ctx.settings.trainer.data, ctx.input_dir("export"))
            num_images, num_ids = len(dataset), len(set(dataset.labels.tolist())) if len(dataset) else 0
            reason = None if num_ids >= 2 else f"the dataset has {num_images} images of {num_ids} identities"
        except ValueError as e:  # EmptyDatasetError (a ValueError) says why the export is empty
            if type(e).__name__ != "EmptyDatasetError":
                raise StageError(f"train: cannot read the training data: {e}") from None
            dataset, where, num_images, num_ids, reason = None, str(ctx.input_dir("export")), 0, 0, str(e)
        if reason is not None:
            self._skip(ctx, reason, where, num_images, num_ids, "; a margin head needs at least 2 identities")
            return
        log.info("train: %d images of %d identities from %s", num_images, num_ids, where)
        where = ctx.portable(where)  # result files (skipped images in metrics.json) name it by stage and key
        from gandiff.recognition.datamodule import TooFewImagesError

        try:
            metrics = self._train(ctx, dataset, where)
        except TooFewImagesError as e:
            self._skip(ctx, str(e), where, num_images, num_ids)
            return
        row = {"status": "trained", "num_images": num_images, "num_identities": num_ids,
               "num_classes": metrics["num_classes"], "steps": metrics["steps"],
               "final_loss": metrics["final_loss"], "val_accuracy": metrics["val_accuracy"]}
        ctx.items.put(MODEL, row, ["backbone.pt", "backbone.onnx", "metrics.json"])

    def _skip(self, ctx: StageContext, reason: str, where: str, num_images: int, num_ids: int,
              why: str = "") -> None:
        """No model. trainer.on_empty=skip records why (the stages after go on without one); error stops."""
        msg = f"training skipped: {reason}{why}"
        if ctx.settings.trainer.on_empty == "error":
            raise StageError(f"train: {msg} ({where}). Set trainer.on_empty=skip to go on without a model")
        log.warning("%s (%s)", msg, where)
        row = {"status": "skipped", "reason": ctx.portable(reason), "num_images": num_images,
               "num_identities": num_ids}
        if ctx.leader:
            atomic_write_json(ctx.dir / "metrics.json", row)
        ctx.items.put(MODEL, row, ["metrics.json"])

    def _train(self, ctx: StageContext, dataset: Any, where: str) -> dict[str, Any]:
        import lightning as L

        from gandiff.recognition.backbones import build_backbone
        from gandiff.recognition.datamodule import FaceDataModule
        from gandiff.recognition.heads import build_head
        from gandiff.recognition.module import NonFiniteLossError, RecognitionModule
        from gandiff.recognition.train import fit_recognizer

        r, t, seed = ctx.settings.recognizer, ctx.settings.trainer, ctx.settings.seed
        L.seed_everything(seed, workers=True, verbose=False)
        dm = FaceDataModule(dataset, batch_size=t.batch_size, seed=seed, num_workers=t.num_workers,
                            augment=plain(t.augment), heldout=t.heldout, heldout_fraction=t.heldout_fraction,
                            heldout_pairs=t.heldout_pairs, val_bins=t.val_bins, val_batch_size=t.val_batch_size,
                            source=where)
        backbone_spec = builder_spec(r, build_backbone, name=r.backbone)
        head_spec = builder_spec(r, build_head, name=r.head, num_classes=dm.num_classes)
        module = RecognitionModule(
            build_backbone(**backbone_spec), build_head(**head_spec), backbone_spec, head_spec,
            optimizer=t.optimizer, learning_rate=t.learning_rate, momentum=t.momentum, weight_decay=t.weight_decay,
            warmup_epochs=t.warmup_epochs, schedule=t.schedule, poly_power=t.poly_power,
            nan_check_every=t.nan_check_every, compile=t.compile,
            lr_milestones=list(t.lr_milestones),  # its own list: the hyper-parameters must not alias ctx.settings
            lr_gamma=t.lr_gamma, bn_weight_decay=t.bn_weight_decay)
        try:
            metrics = fit_recognizer(
                module, dm, ctx.dir, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
                num_nodes=t.num_nodes, precision=t.precision, max_epochs=t.max_epochs, max_steps=t.max_steps,
                gradient_clip_val=t.gradient_clip_val, log_every_n_steps=t.log_every_n_steps,
                val_every_n_epochs=t.val_every_n_epochs, checkpoint_every_n_steps=t.checkpoint_every_n_steps,
                deterministic=t.deterministic, tracker=ctx.tracker)
        except NonFiniteLossError as e:
            raise StageError(f"train: {e}") from None
        ctx.timings.update(metrics.pop("timings"))
        return metrics

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        row = ctx.items.get(MODEL)
        metrics = read_json(ctx.dir / "metrics.json")
        curve = [{"step": r["step"], "epoch": r["epoch"], "loss": r["loss"], "lr": r["lr"]}
                 for r in metrics.get("loss", [])]
        write_table(ctx.dir / "training.parquet", curve, schema=_loss_schema())
        counts = {"training": row["status"], "num_images": row["num_images"], "num_identities": row["num_identities"]}
        if row["status"] == "trained":
            counts.update(final_loss=row["final_loss"], val_accuracy=row["val_accuracy"], steps=row["steps"],
                          skipped_images=metrics.get("skipped_images", 0))
        else:
            counts["reason"] = row["reason"]
        return counts


def _loss_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("step", pa.int64()), ("epoch", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64())])
