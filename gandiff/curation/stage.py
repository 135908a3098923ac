"""The ``curate`` stage: score every generated image (the only curation step that runs models).

Scoring (every model) and selection (arithmetic over the scores, the ``export`` stage) are two stages, so a
sweep over curation thresholds shares one ``curate/<key>/`` folder (config keys ``face``, ``attributes``,
``curation.detect_size``) and gets one ``export/<key>/`` per setting. Items are identities; each writes
``crops/<id>/``, ``embeddings/<id>.npy`` and one row per image; the merge writes ``scores.parquet`` and
``embeddings.npy`` in the same row order. Unreadable and faceless images are kept as rows with their status.

Design: docs/design.md#the-curate-stage.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.artifacts import atomic_path, read_table, save_image, write_table
from gandiff.curation.score import (
    ATTRIBUTE_FIELDS,
    classify_faces,
    embed_faces,
    identity_similarities,
    measure_faces,
)
from gandiff.curation.select import FAMILY_PREFIX
from gandiff.pipeline import Stage, StageContext, StageError

log = logging.getLogger(__name__)


def load_identities(folder: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The identity stage's table and anchor embeddings (N, D), checked against each other."""
    rows = read_table(folder / "identities.parquet")
    emb_path = folder / "embeddings.npy"
    if not emb_path.exists():
        raise StageError(f"{emb_path}: anchor embeddings missing (the identities stage writes them)")
    emb = np.load(emb_path, allow_pickle=False).astype(np.float32)
    if emb.ndim != 2 or len(emb) != len(rows):
        raise StageError(f"{emb_path}: shape {emb.shape} does not match the {len(rows)} rows of identities.parquet")
    return rows, emb


def build_detector(detector_cfg: Any, detect_size: int | None) -> Any:
    """The ``face.detector`` with its input size set to ``detect_size`` x ``detect_size`` (None: as configured).

    Same rule as the identity stage's ``identity.detect_size``: a face filling a 64x64 generation is found
    at a detector input near its own scale (YuNet at 160 px), while letterboxed into 640 px it is a face far
    larger than the scales the detector was trained on, and some are missed. Detectors whose constructor
    takes no ``input_size`` (MTCNN searches an image pyramid) are built as configured.
    """
    import inspect

    from hydra.utils import get_object, instantiate

    if detect_size is None:
        return instantiate(detector_cfg)
    target = get_object(detector_cfg["_target_"])
    if "input_size" not in inspect.signature(target).parameters:
        log.info("curate: curation.detect_size=%s does not apply to %s (no input_size): detecting as configured",
                 detect_size, detector_cfg["_target_"])
        return instantiate(detector_cfg)
    return instantiate(detector_cfg, input_size=[detect_size] * 2)


class CurateStage(Stage):
    name = "curate"
    upstream = ("generate", "identities")
    example = "gandiff curate -m curation.min_anchor_similarity=0.3,0.4,0.5"
    config_keys = ("face", "attributes", "curation.detect_size")
    # 1: fam_<family> columns read generate's choice_<family> (they were empty before, 2026-12-04).
    # 2: the coverage column (the aligned crop's fraction inside the image, for curation.min_coverage).
    revision = 2
    # Speed only (batch sizes; results do not depend on them); match_threshold is not used to score
    # (selection thresholds live in ``curation``).
    ignore_keys = ("face.batch_size", "face.detector.batch_size", "face.embedder.batch_size",
                   "attributes.classifier.batch_size", "face.match_threshold")

    def items(self, ctx: StageContext) -> list[str]:
        rows, _ = load_identities(ctx.input_dir("identities"))
        return [r["id"] for r in rows]

    def _models(self, ctx: StageContext) -> tuple[Any, Any, Any]:
        from hydra.utils import instantiate

        s = ctx.settings
        detector = build_detector(s.face.detector, s.curation.detect_size)
        embedder = instantiate(s.face.embedder)
        classifier = instantiate(s.attributes.classifier) if s.attributes.classifier is not None else None
        return detector, embedder, classifier

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        from gandiff.face.images import ImageReadError, read_image

        gen_dir = ctx.input_dir("generate")
        images = read_table(gen_dir / "images.parquet")
        id_rows, anchors = load_identities(ctx.input_dir("identities"))
        ids = [r["id"] for r in id_rows]
        pos = {i: k for k, i in enumerate(ids)}
        unknown = sorted({r["id"] for r in images} - set(pos))
        if unknown:
            raise StageError(f"{gen_dir / 'images.parquet'}: images of identities {unknown[:5]} that are not in "
                             f"{ctx.input_dir('identities') / 'identities.parquet'}")
        families = sorted(ctx.settings.prompts.families)
        by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in images:
            by_id[r["id"]].append(r)
        batch = ctx.settings.face.batch_size
        detector, embedder, classifier = self._models(ctx)

        for ident in ctx.progress(keys, total=len(keys), desc="curate: scoring identities"):
            rows = sorted(by_id.get(ident, []), key=lambda r: r["image_id"])
            pixels, readable = [], []
            errors: dict[int, str] = {}
            for k, r in enumerate(rows):
                try:
                    pixels.append(read_image(gen_dir / r["path"]))
                    readable.append(k)
                except ImageReadError as e:
                    errors[k] = str(e)
                    log.warning("curate: skipping unreadable image: %s", e)
            meas = [None] * len(rows)
            for k, m in zip(readable, measure_faces(pixels, detector, batch)):
                meas[k] = m
            face_rows = [k for k, m in enumerate(meas) if m is not None and m.crop is not None]
            image_of = dict(zip(readable, pixels))
            faces = [(image_of[k], meas[k].points) for k in face_rows]  # (original image, (5, 2) landmarks)
            crops = np.stack([meas[k].crop for k in face_rows]) if face_rows else np.zeros((0, 112, 112, 3), np.uint8)
            emb_faces = embed_faces(faces, crops, embedder, batch)
            attrs = dict(zip(face_rows, classify_faces(faces, classifier)))
            del pixels, image_of, faces
            dim = anchors.shape[1]
            emb = np.zeros((len(rows), dim), dtype=np.float32)
            if face_rows:
                if emb_faces.shape[1] != dim:
                    raise StageError(f"face.embedder gives {emb_faces.shape[1]}-d embeddings but the identities' "
                                     f"anchors are {dim}-d: the identities stage used another embedder")
                emb[face_rows] = emb_faces
            has_face = np.zeros(len(rows), dtype=bool)
            has_face[face_rows] = True
            own = pos[ident]
            others = np.delete(anchors, own, axis=0)
            other_ids = [i for i in ids if i != ident]
            sims = identity_similarities(emb, has_face, anchors[own], others, other_ids)

            files: list[Path] = []
            out_rows = []
            for k, r in enumerate(rows):
                m = meas[k]
                status = "unreadable" if k in errors else ("ok" if has_face[k] else "no_face")
                crop_rel = ""
                if has_face[k]:
                    crop_rel = f"crops/{ident}/{r['image_id']}.png"
                    files.append(save_image(ctx.dir / crop_rel, m.crop))
                row: dict[str, Any] = {
                    "id": ident, "image_id": r["image_id"], "path": r["path"], "status": status,
                    "error": errors.get(k, ""), "n_faces": m.n_faces if m is not None else 0, "crop": crop_rel,
                    "prompt": r.get("prompt", ""), "seed": r.get("seed"),
                }
                for f in ("det_score", "face_size", "eye_distance", "box", "landmarks", "yaw", "pitch", "roll",
                          "sharpness", "quality", "coverage"):
                    row[f] = getattr(m, f) if m is not None else None
                for f in ("anchor_sim", "centroid_sim", "other_sim", "other_id"):
                    row[f] = sims[f][k]
                a = attrs.get(k, {})
                for f in ATTRIBUTE_FIELDS:
                    row[f] = a.get(f)
                for fam in families:
                    row[FAMILY_PREFIX + fam] = r.get(f"choice_{fam}") or ""  # the generate manifest's column
                out_rows.append(row)
            emb_rel = ctx.dir / "embeddings" / f"{ident}.npy"
            with atomic_path(emb_rel) as tmp:
                np.save(tmp, emb)
            files.append(emb_rel)
            ctx.items.put(ident, {"id": ident, "images": out_rows}, files)

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        embs = []
        for rec in ctx.items.rows(keys):
            e = np.load(ctx.dir / "embeddings" / f"{rec['id']}.npy", allow_pickle=False)
            for k, r in enumerate(rec["images"]):
                rows.append({**r, "embedding_row": len(rows)})
            embs.append(e)
        emb = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
        with atomic_path(ctx.dir / "embeddings.npy") as tmp:
            np.save(tmp, emb)
        write_table(ctx.dir / "scores.parquet", rows)
        n_ok = sum(r["status"] == "ok" for r in rows)
        counts = {
            "identities": len(keys),
            "images": len(rows),
            "faces": n_ok,
            "unreadable": sum(r["status"] == "unreadable" for r in rows),
            "no_face": sum(r["status"] == "no_face" for r in rows),
            "identities_without_face": sum(1 for rec in ctx.items.rows(keys)
                                           if not any(r["status"] == "ok" for r in rec["images"])),
        }
        if rows and n_ok == 0:
            log.warning("curate: no face was found in any of the %d generated images (%d unreadable): "
                        "selection will keep nothing. With the demo's tiny random diffusion model this is expected.",
                        len(rows), counts["unreadable"])
        elif counts["unreadable"] or counts["identities_without_face"]:
            log.warning("curate: %d unreadable images skipped; %d identities have no usable face",
                        counts["unreadable"], counts["identities_without_face"])
        log.info("curate: %d images of %d identities scored: %d faces, %d without a face, %d unreadable",
                 len(rows), len(keys), n_ok, counts["no_face"], counts["unreadable"])
        return counts
