"""Recognizer training throughput: the LightningModule vs a plain PyTorch loop, same model, same data.

A RecordIO dataset is written on the fly (synthetic 112x112 faces, JPEG, like insightface's .rec files)
and read back through ``gandiff.datasets.readers.open_dataset`` and ``FaceDataModule``, so every number
includes real data loading (decode, flip, collate, host-to-device copy). Three measurements:

- data loader alone: images/s of the training DataLoader (``num_workers`` processes);
- plain loop: ``for batch in loader: forward, margin head, cross-entropy, backward, SGD step`` with the
  same autocast / channels-last settings as the module;
- Lightning: ``RecognitionModule`` under ``lightning.Trainer`` (what ``gandiff train`` runs).

Examples::

    python scripts/bench/train.py                                   # CPU, small model, a few steps
    python scripts/bench/train.py --backbone iresnet50 --device cuda --precision bf16-mixed \\
        --batch-size 256 --steps 60 --workers 12                    # the GPU check (scripts/gpu_check.py)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("bench.train")


def write_synthetic_recordio(out_dir: Path, num_classes: int, per_class: int, seed: int = 0) -> Path:
    """A RecordIO set of smooth random colour patterns (JPEG-encoded 112x112 RGB), one pattern per class."""
    from gandiff.datasets.recordio import write_recordio

    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(num_classes):
        grid = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
        base = np.kron(grid, np.ones((28, 28, 1), np.float32))
        ids.append([np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8) for _ in range(per_class)])
    write_recordio(out_dir, ids, image_format="jpg")
    return out_dir


def _loader_rate(loader: Any, batches: int) -> float:
    n, t0 = 0, None
    it = iter(loader)
    for i in range(batches + 2):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        if i == 2:  # the first batches pay for worker start-up
            t0 = time.perf_counter()
        elif i > 2:
            n += len(b["label"])
    return n / (time.perf_counter() - t0)


def bench_train(backbone: str = "iresnet50", batch_size: int = 128, steps: int = 50, device: str = "cuda",
                precision: str = "bf16-mixed", num_workers: int = 8, warmup: int = 5, num_classes: int = 1000,
                per_class: int = 8, compile: bool = False, root: str | None = None) -> dict[str, Any]:
    """images/s of the data loader, a plain loop and the LightningModule on ``device``; returns the numbers."""
    import lightning as L

    from gandiff.datasets.readers import open_dataset
    from gandiff.recognition.backbones import build_backbone
    from gandiff.recognition.datamodule import FaceDataModule
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import RecognitionModule, normalize_faces
    from gandiff.recognition.train import build_trainer

    tmp = tempfile.TemporaryDirectory(dir=root)
    rec = write_synthetic_recordio(Path(tmp.name) / "rec", num_classes, per_class)
    dataset = open_dataset(rec)
    dev = torch.device(device)
    emb = 512 if backbone.startswith("iresnet") else 128
    amp = precision.startswith("bf16") and dev.type == "cuda"

    def make_dm() -> FaceDataModule:
        return FaceDataModule(dataset, batch_size=batch_size, seed=0, num_workers=num_workers, heldout="none")

    out: dict[str, Any] = {"backbone": backbone, "batch_size": batch_size, "steps": steps, "device": str(dev),
                           "precision": precision, "num_workers": num_workers, "dataset_images": len(dataset)}
    out["loader_images_per_s"] = _loader_rate(make_dm().train_dataloader(), steps)

    # Plain PyTorch loop over the same loader.
    L.seed_everything(0, verbose=False)
    model = build_backbone(backbone, emb).to(dev)
    head = build_head("arcface", num_classes, emb).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = make_dm().train_dataloader()
    it, n, t0 = iter(loader), 0, None
    for i in range(warmup + steps):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = normalize_faces(b["image"].to(dev, non_blocking=True))
        y = b["label"].to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(head(model(x), y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if i >= warmup:
            n += len(y)
    loss.item()  # waits for the device
    out["plain_images_per_s"] = n / (time.perf_counter() - t0)
    del model, head, opt

    # The LightningModule under lightning.Trainer.
    L.seed_everything(0, verbose=False)
    spec = {"name": backbone, "embedding_size": emb}
    head_spec = {"name": "arcface", "num_classes": num_classes, "embedding_size": emb}
    module = RecognitionModule(build_backbone(**spec), build_head(**head_spec), spec, head_spec,
                               warmup_epochs=0.0, nan_check_every=50, compile=compile)
    timer = _StepTimer(warmup)
    trainer, _ = build_trainer(Path(tmp.name) / "lightning", accelerator=dev.type, devices=1,
                               precision=precision if dev.type == "cuda" else "32-true", max_epochs=1000,
                               max_steps=warmup + steps, gradient_clip_val=5.0, log_every_n_steps=50,
                               checkpoint_every_n_steps=10**9, validate=False, callbacks=[timer])
    trainer.fit(module, datamodule=make_dm())
    out["lightning_images_per_s"] = timer.images / timer.seconds
    out["lightning_vs_plain"] = out["lightning_images_per_s"] / out["plain_images_per_s"]
    tmp.cleanup()
    return out


class _StepTimer(Callback):
    """Times the steps after ``warmup`` (data loading included)."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.t0: float | None = None
        self.images, self.seconds = 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.images += len(batch["label"])

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="mobilefacenet_small")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    r = bench_train(a.backbone, a.batch_size, a.steps, a.device, a.precision, a.workers, a.warmup, a.classes,
                    compile=a.compile)
    print(f"{r['backbone']} batch {r['batch_size']} on {r['device']} ({r['precision']}), {r['num_workers']} workers, "
          f"{r['steps']} timed steps")
    print(f"{'measurement':<28}{'images/s':>12}")
    for k, name in (("loader_images_per_s", "data loader alone"), ("plain_images_per_s", "plain PyTorch loop"),
                    ("lightning_images_per_s", "LightningModule")):
        print(f"{name:<28}{r[k]:>12.1f}")
    print(f"{'Lightning / plain':<28}{r['lightning_vs_plain']:>12.3f}")


if __name__ == "__main__":
    main()
