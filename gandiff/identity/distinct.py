"""Distinctiveness: keep an identity only if it is far from every identity already kept.

GANDiffFace keeps a sampled identity when its embedding's cosine similarity to every identity kept so far is
below a threshold (Melzi et al. 2023, Sec. 3.1). Kept embeddings live in one growing float32 matrix; the greedy
order is the draw order. A candidate's recorded similarity is :meth:`DistinctSet.max_similarity` (one
matrix-vector product over all kept rows: its rounding never depends on how candidates were batched);
:meth:`max_to_kept`, the fast blocked pass over a batch, only rejects candidates above the threshold by more
than :meth:`rounding_bound`, so batching never changes a decision.

Design: docs/design.md#distinctiveness.
"""

from __future__ import annotations

import numpy as np


class DistinctSet:
    def __init__(self, dim: int, threshold: float, block: int = 65536, capacity: int = 1024):
        self.dim, self.threshold, self.block = int(dim), float(threshold), int(block)
        self._data = np.zeros((max(1, capacity), self.dim), np.float32)
        self.size = 0
        self.max_norm = 0.0  # largest norm of a kept embedding (for the rounding bound)
        self.accept_max: list[float] = []  # each kept identity's max similarity to those kept before it

    @property
    def embeddings(self) -> np.ndarray:  # (size, dim)
        return self._data[: self.size]

    def max_similarity(self, emb: np.ndarray) -> float:
        """(dim,) -> max cosine similarity to the kept identities (-inf when none is kept): the canonical value,
        independent of batching (module doc)."""
        if self.size == 0:
            return float("-inf")
        return float((self._data[: self.size] @ np.asarray(emb, np.float32).reshape(self.dim)).max())

    def rounding_bound(self, emb: np.ndarray) -> float:
        """Twice the float32 error bound of one dot product of ``emb`` with a kept row, gamma_d |a| |b|
        (Higham, Accuracy and Stability, 3.1): two ways of computing the same similarity differ by less."""
        u = self.dim * 2.0**-24
        return 2.0 * u / (1.0 - u) * float(np.linalg.norm(np.asarray(emb, np.float64))) * self.max_norm

    def max_to_kept(self, emb: np.ndarray) -> np.ndarray:
        """(B, dim) -> (B,) max cosine similarity to any kept identity (-inf when none is kept), in row blocks
        (memory ``block x B``). Fast, but a row's last bit depends on the batch: see :meth:`max_similarity`."""
        emb = np.asarray(emb, np.float32).reshape(-1, self.dim)
        best = np.full(len(emb), -np.inf, np.float32)
        for start in range(0, self.size, self.block):
            sims = emb @ self._data[start: min(start + self.block, self.size)].T  # (B, block)
            np.maximum(best, sims.max(axis=1), out=best)
        return best

    def add(self, emb: np.ndarray, max_sim: float) -> None:
        if self.size == len(self._data):
            grown = np.zeros((2 * len(self._data), self.dim), np.float32)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size] = np.asarray(emb, np.float32).reshape(self.dim)
        self.max_norm = max(self.max_norm, float(np.linalg.norm(self._data[self.size].astype(np.float64))))
        self.size += 1
        self.accept_max.append(float(max_sim))


def similarity_summary(emb: np.ndarray, exact_max: float | None = None, max_pairs: int = 5_000_000,
                       block: int = 2048, seed: int = 0, bins: int = 40) -> dict:
    """Distribution of pairwise (i < j) cosine similarities among ``emb`` (N, D).

    Exact over all pairs when there are at most ``max_pairs``; otherwise over the pairs of a random
    subset of rows (seeded) large enough to give ``max_pairs`` pairs. ``exact_max``: the true maximum
    when the caller knows it (``DistinctSet.accept_max`` gives it for free), reported as ``max``.
    """
    emb = np.asarray(emb, np.float32)
    n = len(emb)
    if n < 2:
        return {"pairs": 0, "max": exact_max, "mean": None, "quantiles": {}, "histogram": {}}
    rows = np.arange(n)
    sampled = n * (n - 1) // 2 > max_pairs
    if sampled:
        m = int((1 + np.sqrt(1 + 8 * max_pairs)) / 2)
        rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    sub = emb[rows]
    edges = np.linspace(-1.0, 1.0, bins + 1)
    hist = np.zeros(bins, np.int64)
    total, count, best = 0.0, 0, -np.inf
    for start in range(0, len(sub), block):
        sims = sub[start: start + block] @ sub.T  # (b, m)
        i = np.arange(start, min(start + block, len(sub)))[:, None]
        vals = sims[np.arange(len(sub))[None, :] > i]  # strict upper triangle
        if vals.size:
            hist += np.histogram(np.clip(vals, -1, 1), bins=edges)[0]
            total += float(vals.sum(dtype=np.float64))
            count += vals.size
            best = max(best, float(vals.max()))
    cdf = np.cumsum(hist) / max(count, 1)
    quantiles = {f"p{int(q * 100)}": float(edges[1:][np.searchsorted(cdf, q)]) for q in (0.5, 0.9, 0.99)}
    return {"pairs": int(count), "sampled": bool(sampled), "max": float(exact_max if exact_max is not None else best),
            "max_in_sample": float(best), "mean": total / max(count, 1), "quantiles_upper_bin_edge": quantiles,
            "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": hist.tolist()}}
