"""Latent edits that vary an identity's images while keeping who it is (the DreamBooth training set).

InterFaceGAN directions (Shen et al., CVPR 2020): a linear SVM for binary attributes (gender), ridge
regression for continuous ones (age, yaw), learned from the classifier's and detector's labels of the sampled
latents (or loaded from an ``.npz``). A variation is ``w + a * s_d * d + e``: strength ``a`` in the latents'
own units along ``d``, plus a bounded random perturbation ``e``; the caller keeps it only if its face is
still the anchor's identity.

Design: docs/design.md#latent-edits.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BINARY = {"gender": ("female", "male")}  # label -> (negative, positive) class names
CONTINUOUS = ("age", "yaw")
SVM_C = (0.001, 0.01, 0.1, 1.0)
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1000.0)


@dataclass
class Direction:
    name: str
    vector: np.ndarray  # (D,) unit norm
    scale: float  # std of latents' projections on vector
    kind: str  # "binary" | "continuous" | "file"
    score: float = float("nan")  # 3-fold CV accuracy (binary) or R^2 (continuous)
    samples: int = 0


def yaw_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """A yaw proxy from five landmarks (N, 5, 2): horizontal offset of the nose tip from the eyes' midpoint,
    in units of the inter-ocular distance. ~0 frontal; its sign says which way the head turns."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    mid = (lm[:, 0] + lm[:, 1]) / 2
    eye = np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)
    return ((lm[:, 2, 0] - mid[:, 0]) / np.maximum(eye, 1e-6)).astype(np.float32)


def learn_direction(name: str, latents: np.ndarray, labels: np.ndarray, min_samples: int = 20,
                    seed: int = 0) -> Direction | None:
    """One InterFaceGAN direction; None (with a log line) when the labels cannot support one."""
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import LinearSVC

    X = np.asarray(latents, np.float64)
    y = np.asarray(labels)
    ok = np.array([v is not None and v == v for v in y])  # drops None and NaN
    X, y = X[ok], y[ok]
    if len(y) < min_samples:
        log.info("edit direction %r: %d labelled latents < %d: skipped", name, len(y), min_samples)
        return None
    cv = 3 if len(y) >= 30 else None  # too few for held-out scores: fit on all, score reported as NaN
    if name in BINARY:
        neg, pos = BINARY[name]
        yb = np.array([1 if v == pos else 0 for v in y])
        if min(yb.sum(), len(yb) - yb.sum()) < max(3, min_samples // 10):
            log.info("edit direction %r: too few of one class (%d %s, %d %s): skipped", name,
                     len(yb) - yb.sum(), neg, yb.sum(), pos)
            return None
        # Few labelled latents in many dimensions: pick the SVM's regularisation by cross-validation.
        best_c, score = 0.01, float("nan")
        if cv:
            scores = {c: float(np.mean(cross_val_score(LinearSVC(C=c, max_iter=20000, random_state=seed), X, yb, cv=cv)))
                      for c in SVM_C}
            best_c = max(scores, key=lambda c: (scores[c], -c))
            score = scores[best_c]
        vec = LinearSVC(C=best_c, max_iter=20000, random_state=seed).fit(X, yb).coef_.reshape(-1)
        kind = "binary"
    else:
        yc = y.astype(np.float64)
        if np.std(yc) == 0:
            return None
        alpha = float(RidgeCV(alphas=RIDGE_ALPHAS).fit(X, yc).alpha_)
        score = float(np.mean(cross_val_score(Ridge(alpha=alpha), X, yc, cv=cv, scoring="r2"))) if cv else float("nan")
        vec = Ridge(alpha=alpha).fit(X, yc).coef_.reshape(-1)
        kind = "continuous"
    norm = np.linalg.norm(vec)
    if not np.isfinite(norm) or norm == 0:
        return None
    vec = (vec / norm).astype(np.float32)
    return Direction(name, vec, float(np.std(X @ vec)), kind, score, len(y))


def learn_directions(latents: np.ndarray, labels: Mapping[str, np.ndarray], names: list[str],
                     min_samples: int = 20, seed: int = 0) -> dict[str, Direction]:
    out = {}
    for name in names:
        if name not in labels:
            log.info("edit direction %r: no labels for it (known: %s): skipped", name, ", ".join(labels))
            continue
        d = learn_direction(name, latents, labels[name], min_samples=min_samples, seed=seed)
        if d is not None:
            out[name] = d
    return out


def save_directions(path: str | os.PathLike, directions: Mapping[str, Direction], latent_std: np.ndarray,
                    atomic: bool = True) -> Path:
    """``.npz`` with names (K,), vectors (K, D), scales, kinds, scores, samples and the latents' per-dim std (D,).

    ``atomic=False`` writes in place: for a private staging folder (``gandiff.identity.compute_once``).
    """
    from gandiff.artifacts import atomic_path

    names = list(directions)
    dim = len(latent_std)
    arrays = {
        "names": np.array(names, dtype=str),
        "vectors": np.stack([directions[n].vector for n in names]) if names else np.zeros((0, dim), np.float32),
        "scales": np.array([directions[n].scale for n in names], np.float32),
        "kinds": np.array([directions[n].kind for n in names], dtype=str),
        "scores": np.array([directions[n].score for n in names], np.float32),
        "samples": np.array([directions[n].samples for n in names], np.int64),
        "latent_std": np.asarray(latent_std, np.float32),
    }
    with atomic_path(path) if atomic else contextlib.nullcontext(Path(path)) as target, open(target, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_directions(path: str | os.PathLike, dim: int) -> tuple[dict[str, Direction], np.ndarray | None]:
    """Directions (and the latents' per-dim std when stored) from ``save_directions``' format.

    Only ``names`` and ``vectors`` (K, D) are required; ``scales`` default to 1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity.edits.file={str(path)!r}: no such file")
    with np.load(path, allow_pickle=False) as z:
        if "names" not in z or "vectors" not in z:
            raise ValueError(f"{path}: expected arrays 'names' (K,) and 'vectors' (K, D); found {sorted(z.files)}")
        names, vectors = [str(n) for n in z["names"]], np.asarray(z["vectors"], np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(names), dim):
            raise ValueError(f"{path}: vectors have shape {vectors.shape}; expected ({len(names)}, {dim}) for this "
                             "source's latent size")
        scales = np.asarray(z["scales"], np.float32) if "scales" in z else np.ones(len(names), np.float32)
        std = np.asarray(z["latent_std"], np.float32) if "latent_std" in z else None
    out = {}
    for n, v, s in zip(names, vectors, scales):
        norm = np.linalg.norm(v)
        if norm == 0:
            raise ValueError(f"{path}: direction {n!r} is all zeros")
        out[n] = Direction(n, v / norm, float(s), "file")
    return out, std


def propose_variations(anchor: np.ndarray, directions: list[Direction], latent_std: np.ndarray, count: int,
                       strength: tuple[float, float], perturbation: float, rng: np.random.Generator,
                       shrink: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """``count`` candidate latents around ``anchor`` (D,): cycle through ``directions`` (none: pure
    perturbations). ``shrink`` scales every step (later rounds try gentler edits). -> ((count, D), edits)."""
    anchor = np.asarray(anchor, np.float32)
    out = np.empty((count, len(anchor)), np.float32)
    edits = []
    for k in range(count):
        w = anchor.copy()
        edit = {"direction": None, "step": 0.0}
        if directions:
            d = directions[k % len(directions)]
            a = float(rng.uniform(*strength)) * (1 if rng.random() < 0.5 else -1) * shrink
            w += a * d.scale * d.vector
            edit = {"direction": d.name, "step": round(a, 4)}
        noise = np.clip(rng.standard_normal(len(anchor)), -2, 2).astype(np.float32)
        w += perturbation * shrink * latent_std * noise
        edit["perturbation"] = round(float(perturbation * shrink), 4)
        out[k] = w
        edits.append(edit)
    return out, edits
