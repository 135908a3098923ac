"""Throughput of the evaluation scorers against plain reference loops (same inputs, same machine).

    python scripts/bench/evaluate.py            # default sizes: a few seconds on 2 CPU cores
    python scripts/bench/evaluate.py --n 20000 --templates 23124 --pairs 15658489   # IJB-C scale

Rows: all-pairs mated/non-mated scores of N embeddings (blocked upper-triangle tiles vs one row at a time
vs a pure-Python double loop on a subset), IJB template-pair scoring (blocked matrix products vs per-pair
gathers), and the ROC (two sorted arrays + searchsorted vs sklearn.metrics.roc_curve).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timeit(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def rowwise_pairs(e, y):
    """Reference: for each i, scores against j > i with one vectorised row (no tiling)."""
    m, nm = [], []
    for i in range(len(e) - 1):
        s = e[i + 1:] @ e[i]
        same = y[i + 1:] == y[i]
        m.append(s[same])
        nm.append(s[~same])
    return np.concatenate(m), np.concatenate(nm)


def python_pairs(e, y):
    """Reference: the plain double loop."""
    m, nm = [], []
    for i in range(len(e)):
        for j in range(i + 1, len(e)):
            (m if y[i] == y[j] else nm).append(float(np.dot(e[i], e[j])))
    return m, nm


def gather_pairs(f, i1, i2, chunk=100_000):
    """Reference: insightface's IJB scoring (gather both features of each pair, row-wise dot), chunked."""
    out = np.empty(len(i1), np.float32)
    for s in range(0, len(i1), chunk):
        out[s:s + chunk] = np.sum(f[i1[s:s + chunk]] * f[i2[s:s + chunk]], -1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="images for the all-pairs benchmark")
    p.add_argument("--ids", type=int, default=600)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--templates", type=int, default=5000)
    p.add_argument("--pairs", type=int, default=2_000_000)
    args = p.parse_args()

    from sklearn.metrics import roc_curve

    from gandiff.evaluation.distributions import all_pair_scores, roc
    from gandiff.evaluation.ijb import score_pairs

    rng = np.random.default_rng(0)
    y = rng.integers(0, args.ids, args.n)
    e = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    n_pairs = args.n * (args.n - 1) // 2
    rows = []

    t_block, (m, nm) = _timeit(lambda: all_pair_scores(e, y, block=2048))
    t_row, (m2, nm2) = _timeit(lambda: rowwise_pairs(e, y))
    assert len(m) == len(m2) and len(nm) == len(nm2)
    sub = 400
    t_py, _ = _timeit(lambda: python_pairs(e[:sub], y[:sub]))
    py_rate = sub * (sub - 1) / 2 / t_py
    rows.append(("all pairs, blocked tiles (2048)", n_pairs, t_block, n_pairs / t_block))
    rows.append(("all pairs, one row at a time", n_pairs, t_row, n_pairs / t_row))
    rows.append((f"all pairs, Python double loop (N={sub})", sub * (sub - 1) // 2, t_py, py_rate))

    f = rng.standard_normal((args.templates, args.dim), dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    ids = np.arange(args.templates) * 3 + 1
    i1, i2 = rng.integers(0, args.templates, args.pairs), rng.integers(0, args.templates, args.pairs)
    t_ijb, s1 = _timeit(lambda: score_pairs(f, ids, ids[i1], ids[i2]))
    t_gather, s2 = _timeit(lambda: gather_pairs(f, i1, i2))
    assert np.allclose(s1, s2, atol=1e-5)
    rows.append((f"IJB pairs, blocked products ({args.templates} templates)", args.pairs, t_ijb, args.pairs / t_ijb))
    rows.append(("IJB pairs, gather + dot (insightface)", args.pairs, t_gather, args.pairs / t_gather))

    lab = np.r_[np.ones(len(m), bool), np.zeros(len(nm), bool)]
    sc = np.r_[m, nm]
    t_roc, _ = _timeit(lambda: roc(m, nm))
    t_sk, _ = _timeit(lambda: roc_curve(lab, sc, drop_intermediate=False))
    rows.append(("ROC, sorted + searchsorted", len(sc), t_roc, len(sc) / t_roc))
    rows.append(("ROC, sklearn roc_curve", len(sc), t_sk, len(sc) / t_sk))

    print(f"{'what':<52} {'pairs':>12} {'seconds':>9} {'pairs/s':>14}")
    for name, n, t, rate in rows:
        print(f"{name:<52} {n:>12,} {t:>9.3f} {rate:>14,.0f}")
    print(f"\nblocked / row-at-a-time: {t_row / t_block:.1f}x   blocked / Python loop: {n_pairs / t_block / py_rate:.0f}x"
          f"   IJB blocked / gather: {t_gather / t_ijb:.1f}x   ROC ours / sklearn: {t_sk / t_roc:.1f}x")


if __name__ == "__main__":
    main()
