"""Identity-leakage audit: are synthetic identities (or images) too close to real people?

A generator trained on real faces can reproduce one (DCFace, Kim et al. CVPR 2023). Every synthetic face
embedding is compared with a gallery of real faces, and pairs whose cosine similarity passes a threshold tied
to a false-match rate ``fmr`` are flagged: ``threshold`` from config, else the lowest value at which at most
``fmr`` of the gallery's own non-mated pairs match. A gallery is an ``.npz`` (``embeddings`` (G, D), ``ids``
(G,); ``python -m gandiff.curation.leakage embed FOLDER OUT.npz``, with the *same* embedder) or a photo folder.

Design: docs/design.md#leakage-audit.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Gallery:
    embeddings: np.ndarray  # (G, D) float32, L2-normalised
    ids: np.ndarray  # (G,) str: the real identity of each row
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # images read / unreadable / without a face

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.ids = np.asarray(self.ids).astype(str)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.ids):
            raise ValueError(f"gallery {self.source}: embeddings {self.embeddings.shape} and ids {self.ids.shape} "
                             "must be (G, D) and (G,)")


def load_gallery_npz(path: str | os.PathLike) -> Gallery:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"curation.leakage_gallery={str(path)!r}: no such file or folder")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("embeddings", "ids") if k not in z]
        if missing:
            raise ValueError(f"{path}: a leakage gallery .npz needs arrays 'embeddings' (G, D) and 'ids' (G,); "
                             f"missing {missing} (has {list(z.keys())})")
        emb = z["embeddings"].astype(np.float32)
        ids = z["ids"]
    norms = np.linalg.norm(emb, axis=1)
    if len(emb) and not np.allclose(norms, 1.0, atol=1e-3):
        log.warning("%s: gallery embeddings are not L2-normalised (norms %.3g..%.3g); normalising", path,
                    norms.min(), norms.max())
        emb = emb / np.maximum(norms[:, None], 1e-12)
    return Gallery(emb, ids, source=str(path), counts={"faces": len(emb)})


def save_gallery_npz(path: str | os.PathLike, gallery: Gallery) -> Path:
    from gandiff.artifacts import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=gallery.embeddings, ids=gallery.ids.astype(str))
    return Path(path)


def embed_gallery_folder(folder: str | os.PathLike, detector: Any, embedder: Any, batch_size: int = 32) -> Gallery:
    """Detect, align (ArcFace 112x112) and embed a folder of real photos; unreadable files are counted.

    Embedded as ``curate`` embeds the synthetic faces (``gandiff.curation.score.embed_faces``: ArcFace crops,
    or the embedder's own chip cut from the photo when it has one), so gallery and images are comparable.
    """
    from gandiff.curation.score import embed_faces
    from gandiff.face.align import align_face
    from gandiff.face.images import IMAGE_SUFFIXES, ImageReadError, read_image

    folder = Path(folder)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    jobs: list[tuple[Path, str | None]] = []  # (image, identity or None: every face is its own identity)
    if subdirs:
        for d in subdirs:
            jobs += [(p, d.name) for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        jobs = [(p, None) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not jobs:
        raise FileNotFoundError(f"curation.leakage_gallery={str(folder)!r}: no images in it "
                                f"(expected <identity>/<image> or <image> files)")
    ids: list[str] = []
    embs: list[np.ndarray] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []  # (photo, (5, 2) landmarks), embedded batch_size at a time

    def flush() -> None:
        if pending:
            crops = np.stack([align_face(img, lm, 112) for img, lm in pending])
            embs.append(embed_faces(pending, crops, embedder, batch_size))
            pending.clear()

    counts = {"images": len(jobs), "unreadable": 0, "no_face": 0}
    for path, ident in jobs:
        try:
            img = read_image(path)
        except ImageReadError as e:
            log.warning("leakage gallery: skipping %s", e)
            counts["unreadable"] += 1
            continue
        dets = detector.detect(img)
        if not dets:
            counts["no_face"] += 1
            continue
        if ident is not None:
            dets = [max(dets, key=lambda d: d.area)]
        for k, d in enumerate(sorted(dets, key=lambda d: (d.box[0], d.box[1]))):
            pending.append((img, d.landmarks))
            ids.append(ident if ident is not None else f"{path.stem}#{k}")
        if len(pending) >= batch_size:
            flush()
    flush()
    if not ids:
        raise ValueError(f"curation.leakage_gallery={str(folder)!r}: no face found in any of its {len(jobs)} images")
    counts["faces"] = len(ids)
    return Gallery(np.concatenate(embs), np.array(ids), source=str(folder), counts=counts)


# --------------------------------------------------------------------------------------------- threshold


def nonmated_top_scores(gallery: Gallery, k: int, block: int = 2048) -> tuple[np.ndarray, int]:
    """The ``k`` highest non-mated scores (descending) and the number of non-mated pairs.

    Pairs (i < j) with different ids; computed in blocks so a 100k-face gallery never holds G^2 scores.
    """
    emb, ids = gallery.embeddings, gallery.ids
    g = len(emb)
    top = np.empty(0, dtype=np.float32)
    n_pairs = 0
    for s in range(0, g, block):
        sims = emb[s:s + block] @ emb.T  # (b, G)
        rows = np.arange(s, min(s + block, g))[:, None]
        valid = (np.arange(g)[None, :] > rows) & (ids[s:s + block, None] != ids[None, :])
        vals = sims[valid]
        n_pairs += vals.size
        if k > 0 and vals.size:
            vals = np.concatenate([top, vals])
            top = vals if vals.size <= k else np.partition(vals, vals.size - k)[-k:]
    return np.sort(top)[::-1], n_pairs


def threshold_at_fmr(gallery: Gallery, fmr: float) -> dict[str, Any]:
    """The lowest threshold t with FMR(t) = #(non-mated >= t) / #non-mated <= ``fmr``.

    With scores sorted descending s_1 >= s_2 >= ..., at most ``m = floor(fmr * pairs)`` may be >= t, so t is
    the next float above s_(m+1). Returns the threshold, the pair count, whether ``fmr`` is resolvable
    (pairs >= 1/fmr) and the FMR actually reached on the gallery.
    """
    if not 0 < fmr < 1:
        raise ValueError(f"curation.leakage_fmr={fmr}: must be in (0, 1)")
    _, n_pairs = nonmated_top_scores(gallery, 0)
    if n_pairs == 0:
        raise ValueError(f"leakage gallery {gallery.source}: needs faces of at least two identities to estimate "
                         "a threshold; give curation.leakage_threshold instead")
    m = int(np.floor(fmr * n_pairs))
    top, _ = nonmated_top_scores(gallery, m + 1)
    t = float(np.nextafter(np.float32(top[m]), np.float32(np.inf)))
    resolvable = n_pairs * fmr >= 1.0
    if not resolvable:
        log.warning("leakage gallery %s has %d non-mated pairs: FMR=%g needs >= %d; the threshold (%.4f) is just "
                    "above the highest non-mated score, i.e. FMR < %.2g on this gallery. Use a larger gallery or "
                    "set curation.leakage_threshold from the embedder's threshold table.",
                    gallery.source, n_pairs, fmr, int(np.ceil(1 / fmr)), t, 1.0 / n_pairs)
    return {"threshold": t, "nonmated_pairs": n_pairs, "fmr_target": fmr, "resolvable": bool(resolvable),
            "fmr_on_gallery": m / n_pairs, "source": "gallery non-mated scores"}


# --------------------------------------------------------------------------------------------- audit


@dataclass
class LeakageReport:
    threshold: dict[str, Any]
    image_max_sim: np.ndarray  # (N,) highest similarity of each synthetic image to the gallery (NaN: no face)
    image_match: list[str]  # (N,) the gallery identity it is closest to ("" when no face)
    flagged_images: list[str]
    flagged_identities: dict[str, dict[str, Any]]  # id -> {anchor_sim, images, match}

    def summary(self) -> dict[str, Any]:
        sims = self.image_max_sim[np.isfinite(self.image_max_sim)]
        return {
            **self.threshold,
            "images_checked": int(sims.size),
            "images_flagged": len(self.flagged_images),
            "identities_flagged": len(self.flagged_identities),
            "max_similarity": round(float(sims.max()), 4) if sims.size else None,
            "flagged": self.flagged_identities,
        }


def audit(image_ids: list[str], image_identity: list[str], image_emb: np.ndarray, has_face: np.ndarray,
          anchor_ids: list[str], anchor_emb: np.ndarray, gallery: Gallery, threshold: dict[str, Any]) -> LeakageReport:
    """Flag images whose face passes the threshold against any gallery face, and identities whose anchor
    does or that have at least one flagged image.

    ``image_emb`` (N, D) and ``anchor_emb`` (C, D) are L2-normalised embeddings from the same embedder as the
    gallery; ``has_face`` (N,) bool marks rows that hold a real embedding.
    """
    t = float(threshold["threshold"])
    if gallery.embeddings.shape[1] != image_emb.shape[1]:
        raise ValueError(f"leakage gallery {gallery.source}: embeddings of dimension {gallery.embeddings.shape[1]}, "
                         f"but the synthetic faces have {image_emb.shape[1]}: it was made with another embedder")
    n = len(image_ids)
    best = np.full(n, np.nan, dtype=np.float32)
    match = [""] * n
    if n and len(gallery.embeddings):
        for s in range(0, n, 4096):
            sims = image_emb[s:s + 4096] @ gallery.embeddings.T  # (b, G)
            j = sims.argmax(1)
            for i, (jj, v) in enumerate(zip(j, sims[np.arange(len(j)), j])):
                if has_face[s + i]:
                    best[s + i] = v
                    match[s + i] = str(gallery.ids[jj])
    flagged_images = [image_ids[i] for i in range(n) if has_face[i] and best[i] >= t]
    flagged: dict[str, dict[str, Any]] = {}
    a_sims = anchor_emb @ gallery.embeddings.T if len(anchor_emb) else np.zeros((0, 0))
    for c, ident in enumerate(anchor_ids):
        j = int(a_sims[c].argmax())
        if a_sims[c, j] >= t:
            flagged[ident] = {"anchor_sim": round(float(a_sims[c, j]), 4), "match": str(gallery.ids[j]), "images": 0}
    for i in range(n):
        if has_face[i] and best[i] >= t:
            rec = flagged.setdefault(image_identity[i], {"anchor_sim": None, "match": match[i], "images": 0})
            rec["images"] += 1
    return LeakageReport(threshold, best, match, flagged_images, dict(sorted(flagged.items())))


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """``python -m gandiff.curation.leakage embed FOLDER OUT.npz [overrides]``: precompute a gallery once."""
    parser = argparse.ArgumentParser(
        prog="python -m gandiff.curation.leakage",
        description="Embed a folder of real face photos into a leakage-audit gallery (.npz) with the "
                    "configured face models, so that every export reuses it without running a model.",
        epilog="example: python -m gandiff.curation.leakage embed /data/lfw lfw_sface.npz face=offline")
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("folder")
    e.add_argument("out")
    e.add_argument("overrides", nargs="*", help="Hydra overrides choosing the face models (e.g. face=offline)")
    args = parser.parse_args(argv)
    from hydra.utils import instantiate

    from gandiff.config import compose
    from gandiff.log import setup_logging

    setup_logging()
    cfg = compose(args.overrides)
    gallery = embed_gallery_folder(args.folder, instantiate(cfg.face.detector), instantiate(cfg.face.embedder),
                                   int(cfg.face.batch_size))
    save_gallery_npz(args.out, gallery)
    print(f"{args.out}: {len(gallery.ids)} faces of {len(set(gallery.ids.tolist()))} identities {gallery.counts}")


if __name__ == "__main__":
    main()
