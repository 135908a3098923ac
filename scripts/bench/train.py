"""Recognizer training throughput: the LightningModule vs a plain PyTorch loop, same model, same data.

A RecordIO dataset is written on the fly (synthetic 112x112 faces, JPEG, like insightface's .rec files)
and read back through ``gandiff.datasets.readers.open_dataset`` and ``FaceDataModule``, so every number
includes real data loading (decode, flip, collate, host-to-device copy). Three measurements:

- data loader alone: images/s of the training DataLoader (``num_workers`` processes);
- plain loop: ``for batch in loader: forward, margin head, cross-entropy, backward, clip, SGD step, LR
  schedule step`` with the same autocast / channels-last settings as the module;
- Lightning: ``RecognitionModule`` under ``lightning.Trainer`` (what ``gandiff train`` runs).

The plain loop and Lightning run interleaved (``--rounds``, ``scripts/bench/harness.py``); the ratio is
Lightning's speed over the plain loop's (1.0: no overhead).

What is timed, on both sides alike: the steady state of one training run, not the whole fit. Each round
builds a fresh seeded model and loader, runs ``--warmup`` untimed steps (worker start-up, first-call kernel
set-up), then times ``--steps`` steps: from the moment step ``warmup``'s batch is loaded and on the device
(Lightning's ``on_train_batch_start``) to the end of the last timed step, LR-scheduler step included
(Lightning's ``on_train_batch_end``, after TrainingHistory's), the device synchronised at both ends; both
windows fetch the same ``steps - 1`` further batches (Lightning reads no batch ahead from a sized loader).
The ratio is of those wall-clock seconds; the "cpu" column is the same ratio on the windows' main-process
CPU seconds (steadier when other work shares the cores; the loader's worker processes are left out on both
sides). Fixed per-fit costs (Trainer construction, loader start, the end-of-fit checkpoint, teardown) are
outside both windows: a 6-step fit would count them in full where a real training pays them once. The
Lightning side runs ``log_every_n_steps=50`` and ``nan_check_every=50`` (the config defaults; within a few
timed steps only the last one logs), with no progress bar (terminal or not) and no checkpoint in the window.

``--profile DIR`` writes cProfile files of one more run of each (``python -m pstats DIR/lightning.prof``).

Examples::

    python scripts/bench/train.py                                   # CPU, small model, a few steps
    python scripts/bench/train.py --backbone iresnet50 --device cuda --precision bf16-mixed \\
        --batch-size 256 --steps 60 --workers 12                    # the GPU check (scripts/gpu_check.py)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import ROUNDS, Seconds, compare, interleave, print_comparisons, write_comparisons  # noqa: E402

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
                per_class: int = 8, compile: bool = False, root: str | None = None, rounds: int = ROUNDS,
                profile: str | None = None) -> dict[str, Any]:
    """images/s of the data loader, a plain loop and the LightningModule on ``device``; returns the numbers.

    The plain loop and the Lightning run alternate ``rounds`` times (each a fresh, seeded model over a fresh
    loader; ``warmup`` steps then ``steps`` timed steps): ``comparison`` is their interleaved ratio.
    ``profile``: a folder where one extra Lightning run and one plain run are profiled with cProfile.
    """
    import lightning as L

    from gandiff.datasets.readers import open_dataset
    from gandiff.recognition.datamodule import FaceDataModule

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    tmp = tempfile.TemporaryDirectory(dir=root)
    rec = write_synthetic_recordio(Path(tmp.name) / "rec", num_classes, per_class)
    dataset = open_dataset(rec)
    dev = torch.device(device)
    emb = 512 if backbone.startswith("iresnet") else 128

    def make_dm() -> FaceDataModule:
        return FaceDataModule(dataset, batch_size=batch_size, seed=0, num_workers=num_workers, heldout="none")

    out: dict[str, Any] = {"backbone": backbone, "batch_size": batch_size, "steps": steps, "device": str(dev),
                           "precision": precision, "num_workers": num_workers, "dataset_images": len(dataset),
                           "rounds": rounds}
    out["loader_images_per_s"] = _loader_rate(make_dm().train_dataloader(), steps)
    spec = dict(backbone=backbone, emb=emb, num_classes=num_classes, dev=dev, precision=precision,
                compile=compile, warmup=warmup, steps=steps)
    cpu: dict[str, list[float]] = {"plain": [], "lightning": []}

    def timed(name: str, fn: Any) -> Any:
        def call() -> Seconds:
            wall, cpu_seconds = fn()
            cpu[name].append(cpu_seconds)
            return Seconds(wall)
        return call

    runs = {"plain": timed("plain", lambda: plain_run(make_dm(), **spec)),
            "lightning": timed("lightning", lambda: lightning_run(make_dm(), Path(tmp.name) / "lightning", **spec))}
    times = interleave(runs, rounds, warmup=0, device=dev)
    # The same windows' main-process CPU seconds (the harness only measures whole calls): the "cpu" column.
    times = {k: (wall, cpu[k][:len(wall)]) for k, (wall, _) in times.items()}
    c = compare("training step", times, "lightning", "plain", steps * batch_size, "images/s")
    c.gandiff = f"RecognitionModule under lightning.Trainer ({backbone}, batch {batch_size})"
    c.reference = "plain PyTorch loop, same model, data, precision"
    out["comparison"] = c
    out["plain_images_per_s"] = c.reference_rate
    out["lightning_images_per_s"] = c.gandiff_rate
    out["lightning_vs_plain"] = c.median
    if profile:
        import cProfile

        Path(profile).mkdir(parents=True, exist_ok=True)
        for name, fn in runs.items():
            L.seed_everything(0, verbose=False)
            cProfile.runctx("fn()", {}, {"fn": fn}, str(Path(profile) / f"{name}.prof"))
    tmp.cleanup()
    return out


def plain_run(dm: Any, backbone: str, emb: int, num_classes: int, dev: torch.device, precision: str, compile: bool,
              warmup: int, steps: int) -> tuple[float, float]:
    """(seconds, main-process CPU seconds) of ``steps`` steps of a plain PyTorch loop after ``warmup``
    steps: the same model, loss, SGD, gradient clipping (backbone only, at 5) and LR schedule as the module,
    no logging."""
    import lightning as L

    from gandiff.recognition.backbones import build_backbone
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import lr_factor, normalize_faces

    L.seed_everything(0, verbose=False)
    amp = precision.startswith("bf16") and dev.type == "cuda"
    model = build_backbone(backbone, emb).to(dev)
    head = build_head("arcface", num_classes, emb).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
        head.compile()
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, 0, warmup + steps))
    loader = dm.train_dataloader()
    it, t0, c0 = iter(loader), 0.0, 0.0
    for i in range(warmup + steps):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        images, y = b["image"].to(dev, non_blocking=True), b["label"].to(dev, non_blocking=True)
        if i == warmup:  # where Lightning's on_train_batch_start runs: batch loaded and on the device
            harness.sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
        x = normalize_faces(images)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(head(model(x), y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
    harness.sync(dev)
    return time.perf_counter() - t0, time.process_time() - c0


def lightning_run(dm: Any, out_dir: Path, backbone: str, emb: int, num_classes: int, dev: torch.device,
                  precision: str, compile: bool, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds, CPU seconds) of the same ``steps`` steps of ``RecognitionModule`` under ``lightning.Trainer`` (what
    ``gandiff train`` runs, with its callbacks), timed from the first timed step's start to the last's end."""
    import lightning as L

    from gandiff.recognition.backbones import build_backbone
    from gandiff.recognition.heads import build_head
    from gandiff.recognition.module import RecognitionModule
    from gandiff.recognition.train import build_trainer

    L.seed_everything(0, verbose=False)
    spec = {"name": backbone, "embedding_size": emb}
    head_spec = {"name": "arcface", "num_classes": num_classes, "embedding_size": emb}
    module = RecognitionModule(build_backbone(**spec), build_head(**head_spec), spec, head_spec,
                               warmup_epochs=0.0, nan_check_every=50, compile=compile)
    timer = _StepTimer(warmup, warmup + steps, dev)
    trainer, _ = build_trainer(out_dir, accelerator=dev.type, devices=1,
                               precision=precision if dev.type == "cuda" else "32-true", max_epochs=1000,
                               max_steps=warmup + steps, gradient_clip_val=5.0, log_every_n_steps=50,
                               checkpoint_every_n_steps=10**9, validate=False, callbacks=[timer],
                               progress_bar=False)
    trainer.fit(module, datamodule=dm)
    return timer.seconds, timer.cpu_seconds


class _StepTimer(Callback):
    """Seconds from the start of step ``first`` (its batch loaded) to the end of step ``last - 1``."""

    def __init__(self, first: int, last: int, device: torch.device):
        self.first, self.last, self.device = first, last, device
        self.t0: float | None = None
        self.c0 = 0.0
        self.seconds = self.cpu_seconds = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.first and self.t0 is None:
            harness.sync(self.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.last and self.t0 is not None:
            harness.sync(self.device)
            self.seconds, self.cpu_seconds = time.perf_counter() - self.t0, time.process_time() - self.c0


def main(argv: list[str] | None = None) -> None:
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
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--profile", default=None, help="folder: cProfile one more run of each into it")
    p.add_argument("--json", default=None, help="write the comparison here (scripts/bench/all.py reads it)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    r = bench_train(a.backbone, a.batch_size, a.steps, a.device, a.precision, a.workers, a.warmup, a.classes,
                    compile=a.compile, rounds=a.rounds, profile=a.profile)
    print(f"{r['backbone']} batch {r['batch_size']} on {r['device']} ({r['precision']}), {r['num_workers']} workers, "
          f"{r['steps']} timed steps after {a.warmup}; data loader alone {r['loader_images_per_s']:.1f} images/s")
    print_comparisons("train", [r["comparison"]])
    write_comparisons(a.json, "train", [r["comparison"]])


if __name__ == "__main__":
    main()
