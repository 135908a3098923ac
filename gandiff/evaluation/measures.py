"""Dataset measures synthetic-face papers report: intra-class variation and inter-class separability.

Pure functions of L2-normalised embeddings ``(N, D)``, labels ``(N,)`` and per-image metadata, so the same
code measures any dataset: the Vendi score per identity (Friedman & Dieng 2023), pose and attribute spread per
identity, mated-score statistics, Vec2Face's inter-class separability count (blocked, as its reference
computes it) and each identity's nearest other identity. Leakage against a real gallery is measured at export
(``gandiff.curation.leakage``).

Design: docs/design.md#dataset-measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

VEC2FACE_THRESHOLD = 0.4  # HaiyuWu/Vec2Face inter-separability-measurement.py: ``sim > 0.40``
POSE_KEYS = ("yaw", "pitch", "roll")
CATEGORICAL_ATTRIBUTES = ("gender", "age_bin", "race")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _groups(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(label, row indices) for each label present, in label order."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    uniq, starts = np.unique(labels[order], return_index=True)
    ends = list(starts[1:]) + [len(order)]
    return [(int(u), order[s:e]) for u, s, e in zip(uniq, starts, ends)]


def _summary(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"count": 0, "mean": None, "std": None, "median": None, "p05": None, "p95": None, "min": None,
                "max": None}
    return {"count": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "p05": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)), "min": float(v.min()),
            "max": float(v.max())}


# --------------------------------------------------------------------------------------------- variation


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (order q=1) of ``embeddings`` (n, D) under the cosine-similarity kernel.

    The non-zero eigenvalues of ``K / n = X X^T / n`` equal those of ``X^T X / n`` (D x D), so the smaller
    of the two matrices is decomposed.
    """
    x = _normalise(embeddings)
    n = len(x)
    if n == 0:
        raise ValueError("vendi_score: no embeddings")
    gram = (x @ x.T) if n <= x.shape[1] else (x.T @ x)
    w = np.linalg.eigvalsh(gram / n)
    w = w[w > 0]
    return float(np.exp(-(w * np.log(w)).sum()))


def vendi_per_identity(embeddings: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Vendi score of each identity's images: ``{label: score}``."""
    return {lab: vendi_score(embeddings[idx]) for lab, idx in _groups(labels)}


def mated_scores_per_identity(embeddings: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Cosine similarity of every unordered pair of images of each identity (identities with >= 2 images)."""
    x = _normalise(embeddings)
    out = {}
    for lab, idx in _groups(labels):
        if len(idx) < 2:
            continue
        s = x[idx] @ x[idx].T
        out[lab] = s[np.triu_indices(len(idx), k=1)]
    return out


def pose_spread(poses: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Per identity, the standard deviation (ddof=0, degrees) of each pose angle: ``{label: (3,)}``.

    ``poses`` (N, 3) = yaw, pitch, roll; NaN rows (no pose) are left out; identities with < 2 poses too.
    """
    poses = np.asarray(poses, dtype=np.float64)
    out = {}
    for lab, idx in _groups(labels):
        p = poses[idx]
        p = p[np.isfinite(p).all(axis=1)]
        if len(p) >= 2:
            out[lab] = p.std(axis=0)
    return out


def label_spread(values: Sequence[Any], labels: np.ndarray) -> dict[int, tuple[float, float]]:
    """Per identity: (entropy in nats of its images' attribute labels, fraction not equal to the majority).

    ``values`` (N,) holds one categorical label per image (None / "" = unknown, left out).
    """
    vals = np.asarray([("" if v is None else str(v)) for v in values], dtype=object)
    out = {}
    for lab, idx in _groups(labels):
        v = [s for s in vals[idx] if s]
        if len(v) < 2:
            continue
        _, counts = np.unique(np.asarray(v, dtype=str), return_counts=True)
        p = counts / counts.sum()
        out[lab] = (float(-(p * np.log(p)).sum()), float(1.0 - counts.max() / counts.sum()))
    return out


# --------------------------------------------------------------------------------------------- separability


def identity_centres(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels present (C,) in label order, centres (C, D): the mean of each identity's embeddings).

    Vec2Face's ``scripts/center_features.py`` averages each identity's features the same way; cosine
    similarity normalises the centres afterwards.
    """
    groups = _groups(labels)
    x = np.asarray(embeddings, dtype=np.float64)
    return (np.asarray([g for g, _ in groups], np.int64),
            np.stack([x[idx].mean(axis=0) for _, idx in groups]) if groups else np.zeros((0, x.shape[1])))


def vec2face_separable(centres: np.ndarray, threshold: float = VEC2FACE_THRESHOLD, block: int = 2048) -> np.ndarray:
    """(C,) bool: identity ``j`` has no earlier identity ``i < j`` whose centre cosine exceeds ``threshold``.

    The count of True is Vec2Face's "unique identities" (``get_similarity`` in
    ``inter-separability-measurement.py``). It depends on the order of the identities, as there.
    """
    c = _normalise(centres)
    n = len(c)
    clash = np.zeros(n, dtype=bool)
    for s in range(0, n, block):
        rows = c[s:s + block]  # identities i in [s, s + b)
        sim = rows @ c.T  # (b, C)
        i = np.arange(s, s + len(rows))[:, None]
        j = np.arange(n)[None, :]
        clash |= ((sim > threshold) & (j > i)).any(axis=0)
    return ~clash


def nearest_other_identity(centres: np.ndarray, block: int = 2048) -> np.ndarray:
    """(C,) the highest cosine between each identity's centre and any other identity's (NaN if C < 2)."""
    c = _normalise(centres)
    n = len(c)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    for s in range(0, n, block):
        sim = c[s:s + block] @ c.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        out[s:s + len(sim)] = sim.max(axis=1)
    return out


# --------------------------------------------------------------------------------------------- all of them


def _pose_array(meta: Sequence[dict[str, Any]]) -> np.ndarray | None:
    rows = []
    found = False
    for m in meta:
        vals = []
        for k in POSE_KEYS:
            v = m.get(k)
            try:
                vals.append(float(v))
                found = found or np.isfinite(float(v))
            except (TypeError, ValueError):
                vals.append(np.nan)
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64) if found else None


def dataset_measures(embeddings: np.ndarray, labels: np.ndarray, image_meta: Sequence[dict[str, Any]] | None = None,
                     threshold: float = VEC2FACE_THRESHOLD) -> dict[str, Any]:
    """Every measure above for one dataset, as plain numbers (JSON-ready).

    ``image_meta`` (N,) per-image dicts (``yaw``/``pitch``/``roll``, ``gender``/``age_bin``/``race``) when the
    dataset carries them (a gandiff export does; a public ``.rec`` does not: those measures are None).
    """
    labels = np.asarray(labels)
    if len(embeddings) != len(labels):
        raise ValueError(f"dataset_measures: {len(embeddings)} embeddings for {len(labels)} labels")
    if image_meta is not None and len(image_meta) != len(labels):
        raise ValueError(f"dataset_measures: {len(image_meta)} metadata rows for {len(labels)} images")
    vendi = vendi_per_identity(embeddings, labels)
    mated = mated_scores_per_identity(embeddings, labels)
    all_mated = np.concatenate(list(mated.values())) if mated else np.zeros(0)
    ids, centres = identity_centres(embeddings, labels)
    separable = vec2face_separable(centres, threshold) if len(centres) else np.zeros(0, bool)
    nearest = nearest_other_identity(centres)
    out: dict[str, Any] = {
        "images": len(labels), "identities": len(ids),
        "vendi": _summary(np.asarray(list(vendi.values()))),
        "vendi_multi_image": _summary(np.asarray([v for k, v in vendi.items() if k in mated])),
        "mated": {**_summary(all_mated), "per_identity_mean": _summary(
            np.asarray([m.mean() for m in mated.values()]))},
        "separability": {"threshold": float(threshold), "separable": int(separable.sum()),
                         "identities": len(separable),
                         "fraction": float(separable.mean()) if len(separable) else None},
        "nearest_other": {**_summary(nearest), "above_threshold": int(np.nansum(nearest > threshold))
                          if len(nearest) else 0},
        "pose": None, "attributes": {},
    }
    if image_meta is not None:
        poses = _pose_array(image_meta)
        if poses is not None:
            spread = pose_spread(poses, labels)
            if spread:
                arr = np.stack(list(spread.values()))  # (C', 3)
                out["pose"] = {f"{k}_std": _summary(arr[:, i]) for i, k in enumerate(POSE_KEYS)}
                out["pose"]["identities"] = len(spread)
        for attr in CATEGORICAL_ATTRIBUTES:
            vals = [m.get(attr) for m in image_meta]
            if not any(v not in (None, "") for v in vals):
                continue
            ls = label_spread(vals, labels)
            if ls:
                ent = np.asarray([v[0] for v in ls.values()])
                dis = np.asarray([v[1] for v in ls.values()])
                out["attributes"][attr] = {"entropy": _summary(ent), "disagreement": _summary(dis),
                                           "identities": len(ls)}
    return out
