"""IJB-B / IJB-C 1:1 template verification, as insightface's ``recognition/arcface_torch/eval_ijbc.py``.

Faces aligned from the given landmarks, flip-added raw features times the detector score, media averaged and
templates summed then normalised, pair scores as cosines in float64 as the reference computes them (float32
ties thousands of pairs), TAR at FAR 1e-6 ... 1e-1 by insightface's nearest-FPR rule on ``roc_curve``.
Scoring is vectorised by blocks of first templates (``scripts/bench/evaluate.py`` times it).

Design: docs/design.md#ijb-bc.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.errors import UserError
from gandiff.evaluation.verification import require_finite

log = logging.getLogger(__name__)

FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class IJBError(UserError, ValueError):
    """An IJB meta file or embedding that cannot be scored; the message names the file and line or image."""



# --------------------------------------------------------------------------------------------- meta files


def _read_columns(path: Path, ncols: int, what: str, dtypes: Sequence[Any]) -> list[np.ndarray]:
    """Space-separated columns via pandas' C parser (15.7M lines in a few seconds); errors name the file."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path}: IJB meta file not found ({what})")
    try:
        df = pd.read_csv(path, sep=" ", header=None, dtype={i: d for i, d in enumerate(dtypes)}, engine="c")
    except Exception as e:  # a short line in an integer column, a stray word ...: find the line
        raise IJBError(_first_bad_line(path, ncols, dtypes, what) or
                       f"{path}: cannot parse as {what} ({type(e).__name__}: {e})") from None
    if df.shape[1] != ncols or df.isna().any().any():
        raise IJBError(_first_bad_line(path, ncols, dtypes, what) or
                       f"{path}: {df.shape[1]} columns, expected {ncols} ({what})")
    return [df[i].to_numpy() for i in range(ncols)]


def _first_bad_line(path: Path, ncols: int, dtypes: Sequence[Any], what: str) -> str | None:
    """The error message for the first line with the wrong number of fields or an unparsable number
    (read line by line: only after pandas has failed)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) != ncols:
                return f"{path}:{n}: {len(fields)} fields, expected {ncols} ({what}): {line.strip()[:80]!r}"
            for v, d in zip(fields, dtypes):
                parse = str if d is str else float if np.dtype(d).kind == "f" else int
                try:
                    parse(v)
                except ValueError:
                    return f"{path}:{n}: {v!r} is not a number ({what})"
    return None


def read_template_media(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<target>_face_tid_mid.txt`` -> (image names (N,), template ids (N,), media ids (N,))."""
    names, tids, mids = _read_columns(Path(path), 3, "'image_name template_id media_id'", (str, np.int64, np.int64))
    return names, tids.astype(np.int64), mids.astype(np.int64)


def read_template_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<target>_template_pair_label.txt`` -> (t1 (P,), t2 (P,), label (P,) int8 1 = same subject)."""
    t1, t2, label = _read_columns(Path(path), 3, "'template1 template2 label'", (np.int64, np.int64, np.int64))
    if not np.isin(label, (0, 1)).all():
        row = int(np.flatnonzero(~np.isin(label, (0, 1)))[0])
        raise IJBError(f"{path}:{row + 1}: label {int(label[row])}: labels must be 0 or 1")
    return t1.astype(np.int64), t2.astype(np.int64), label.astype(np.int8)


def read_landmarks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``<target>_name_5pts_score.txt`` -> (names (N,), landmarks (N, 5, 2) float32, detector scores (N,))."""
    cols = _read_columns(Path(path), 12, "'name x1 y1 ... x5 y5 score'", (str,) + (np.float64,) * 11)
    lmk = np.stack(cols[1:11], axis=1).astype(np.float32).reshape(-1, 5, 2)
    return cols[0], lmk, cols[11].astype(np.float32)


# --------------------------------------------------------------------------------------------- features


def image_features(embed_raw: Callable[[np.ndarray], np.ndarray], root: str | os.PathLike, names: Sequence[str],
                   landmarks: np.ndarray, batch_size: int = 128, flip: bool = True,
                   progress: Callable[..., Any] | None = None) -> np.ndarray:
    """Align each ``root/name`` face from its landmarks and embed it -> ``(N, D)`` raw (unnormalised) features,
    ``e(x) + e(mirror(x))`` with ``flip`` (insightface F2). ``embed_raw`` must not normalise (mode N1)."""
    from gandiff.face.align import align_face
    from gandiff.face.images import read_image

    root = Path(root)
    out: np.ndarray | None = None
    starts = range(0, len(names), batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="IJB faces")
    for s in starts:
        crops = np.stack([align_face(read_image(root / names[i]), landmarks[i], size=112)
                          for i in range(s, min(s + batch_size, len(names)))])  # (B, 112, 112, 3) RGB
        f = np.asarray(embed_raw(crops), dtype=np.float32)
        if flip:
            f = f + np.asarray(embed_raw(np.ascontiguousarray(crops[:, :, ::-1])), dtype=np.float32)
        require_finite(f, [root / n for n in names[s: s + len(crops)]])
        if out is None:
            out = np.empty((len(names), f.shape[1]), dtype=np.float32)
        out[s: s + len(crops)] = f
    if out is None:
        raise ValueError("image_features: no images")
    return out


def template_features(features: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                      detector_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image features ``(N, D)`` -> L2-normalised float64 template features ``(T, D)`` and their sorted ids
    ``(T,)``.

    Features are weighted by the detector score (D1), averaged within each (template, media), summed over
    a template's media, normalised: insightface's ``image2template_feature`` (whose template features are
    float64), grouped with sorts and ``np.add.reduceat`` instead of a Python loop per template.
    """
    require_finite(features)
    f = np.asarray(features, dtype=np.float64)
    if detector_scores is not None:
        f = f * np.asarray(detector_scores, dtype=np.float64)[:, None]
    t, m = np.asarray(templates), np.asarray(medias)
    order = np.lexsort((m, t))  # by template, then media
    ts, ms, fs = t[order], m[order], f[order]
    new_group = np.r_[True, (ts[1:] != ts[:-1]) | (ms[1:] != ms[:-1])]
    starts = np.flatnonzero(new_group)
    counts = np.diff(np.r_[starts, len(ts)])
    media_feats = np.add.reduceat(fs, starts, axis=0) / counts[:, None]  # (M, D) mean per media
    media_tids = ts[starts]
    t_starts = np.flatnonzero(np.r_[True, media_tids[1:] != media_tids[:-1]])
    tfeats = np.add.reduceat(media_feats, t_starts, axis=0)  # (T, D) sum of media
    norm = np.linalg.norm(tfeats, axis=1, keepdims=True)
    return tfeats / np.maximum(norm, 1e-12), media_tids[t_starts]


def score_pairs(template_feats: np.ndarray, template_ids: np.ndarray, t1: np.ndarray, t2: np.ndarray,
                block: int = 1024) -> np.ndarray:
    """Cosine score ``(P,)`` float64 of each template pair (the reference's ``np.sum(feat1 * feat2, -1)`` in
    float64). Pairs are grouped by first template; each group of ``block`` first templates costs one
    ``(block, D) @ (D, U)`` product against the ``U`` templates it meets."""
    ids = np.asarray(template_ids)
    i1 = np.searchsorted(ids, t1)
    i2 = np.searchsorted(ids, t2)
    for name, t, i in (("t1", t1, i1), ("t2", t2, i2)):
        bad = (i >= len(ids)) | (ids[np.minimum(i, len(ids) - 1)] != t)
        if bad.any():
            raise IJBError(f"template pairs: {name}={int(np.asarray(t)[bad][0])} has no images in the "
                             f"template/media file ({int(bad.sum())} pairs affected)")
    feats = np.ascontiguousarray(template_feats, dtype=np.float64)
    require_finite(feats, [f"template {t}" for t in ids], "template feature")
    order = np.argsort(i1, kind="stable")
    s1, s2 = i1[order], i2[order]
    out = np.empty(len(t1), dtype=np.float64)
    bounds = np.searchsorted(s1, np.arange(0, len(ids) + block, block))
    for b in range(len(bounds) - 1):
        lo, hi = bounds[b], bounds[b + 1]
        if lo == hi:
            continue
        rows = s1[lo:hi] - b * block
        cols, inv = np.unique(s2[lo:hi], return_inverse=True)
        sim = feats[b * block: (b + 1) * block] @ feats[cols].T  # (block, U)
        out[order[lo:hi]] = sim[rows, inv]
    return out


# --------------------------------------------------------------------------------------------- TAR @ FAR


def roc_curve_dropped(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sklearn.metrics.roc_curve(labels, scores)`` (``drop_intermediate=True``): (fpr, tpr, thresholds)."""
    from gandiff.evaluation.distributions import roc

    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores)
    fpr, tpr, thr = roc(s[y], s[~y])
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tps, fps = np.rint(tpr[1:] * n_pos), np.rint(fpr[1:] * n_neg)
    if len(fps) > 2:  # keep the corners of the staircase (sklearn's optimal_idxs)
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        tps, fps, t = tps[keep], fps[keep], thr[1:][keep]
    else:
        t = thr[1:]
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, t]


def tar_at_far(labels: np.ndarray, scores: np.ndarray, fars: Sequence[float] = FAR_TARGETS) -> dict[str, float]:
    """insightface's IJB table: for each FAR, the TPR of the ROC point with FPR nearest to it (the highest
    TPR among equally near points)."""
    fpr, tpr, _ = roc_curve_dropped(labels, scores)
    out = {}
    for far in fars:
        d = np.abs(fpr - far)
        k = int(np.flatnonzero(d == d.min())[-1])
        out[f"tar@far={far:g}"] = float(tpr[k])
    return out


@dataclass
class IJBResult:
    target: str
    scores: np.ndarray  # (P,) float64
    labels: np.ndarray  # (P,) int8
    tar: dict[str, float]
    num_templates: int
    num_images: int

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "pairs": int(len(self.scores)), "templates": self.num_templates,
                "images": self.num_images, **self.tar}


def evaluate_ijb(root: str | os.PathLike, target: str, embed_raw: Callable[[np.ndarray], np.ndarray],
                 batch_size: int = 128, flip: bool = True, detector_score: bool = True,
                 progress: Callable[..., Any] | None = None) -> IJBResult:
    """The whole 1:1 protocol on an insightface-layout IJB folder (``<root>/meta``, ``<root>/loose_crop``)."""
    target = target.upper()
    if target not in ("IJBB", "IJBC"):
        raise ValueError(f"benchmark.ijb.target={target!r}: must be IJBB or IJBC")
    root = Path(root)
    meta = root / "meta"
    names, tids, mids = read_template_media(meta / f"{target.lower()}_face_tid_mid.txt")
    p1, p2, label = read_template_pairs(meta / f"{target.lower()}_template_pair_label.txt")
    lm_names, lmk, det = read_landmarks(meta / f"{target.lower()}_name_5pts_score.txt")
    if len(lm_names) != len(names):
        raise ValueError(f"{meta}: {len(lm_names)} landmark rows but {len(names)} template/media rows "
                         "(the files list the same images in the same order)")
    feats = image_features(embed_raw, root / "loose_crop", list(lm_names), lmk, batch_size=batch_size, flip=flip,
                           progress=progress)
    tfeats, tids_sorted = template_features(feats, tids, mids, det if detector_score else None)
    scores = score_pairs(tfeats, tids_sorted, p1, p2)
    return IJBResult(target, scores, label, tar_at_far(label, scores), len(tids_sorted), len(names))
