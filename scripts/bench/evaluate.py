"""Throughput of the evaluation scorers against plain reference loops (same inputs, same machine).

    python scripts/bench/evaluate.py            # default sizes: a few seconds on 2 CPU cores
    python scripts/bench/evaluate.py --n 20000 --templates 23124 --pairs 15658489   # IJB-C scale

Rows: all-pairs mated/non-mated scores of N embeddings (blocked upper-triangle tiles vs one row at a time
vs a pure-Python double loop on a subset), IJB template-pair scoring (blocked matrix products vs per-pair
gathers), and the ROC (two sorted arrays + searchsorted vs sklearn.metrics.roc_curve). Each pair of paths
runs interleaved (--rounds, ``scripts/bench/harness.py``), every path under the same pinned BLAS/OpenMP thread
count (--threads, default 1; threadpoolctl): on a shared 2-core machine two BLAS threads per process
oversubscribe the cores, and a path of many small BLAS calls (one row at a time: N calls) then pays the
threads' wake-up on every call while the tiled path pays it a few times, so an unpinned ratio measures the
machine's load rather than the algorithm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (ROUNDS, compare, interleave, pinned_threads, print_comparisons,  # noqa: E402
                     write_comparisons)


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="images for the all-pairs benchmark")
    p.add_argument("--ids", type=int, default=600)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--templates", type=int, default=5000)
    p.add_argument("--pairs", type=int, default=2_000_000)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads for every path (the same for reference and gandiff)")
    p.add_argument("--json", default=None, help="write the comparisons here (scripts/bench/all.py reads them)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads {args.threads}: must be >= 1")
    import sklearn.metrics  # noqa: F401  (load every BLAS/OpenMP library before pinning their pools)

    import gandiff.evaluation.distributions  # noqa: F401
    import gandiff.evaluation.ijb  # noqa: F401

    with pinned_threads(args.threads) as threads_line:
        comps = run(args)
    print(f"{args.n} embeddings of dimension {args.dim}, {args.ids} identities; {threads_line}")
    print_comparisons("evaluate", comps)
    write_comparisons(args.json, "evaluate", comps[:1], {"threads": args.threads, "pools": threads_line})


def run(args: argparse.Namespace) -> list:
    from sklearn.metrics import roc_curve

    from gandiff.evaluation.distributions import all_pair_scores, roc
    from gandiff.evaluation.ijb import score_pairs

    rng = np.random.default_rng(0)
    y = rng.integers(0, args.ids, args.n)
    e = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    n_pairs = args.n * (args.n - 1) // 2
    m, nm = all_pair_scores(e, y, block=2048)
    m2, nm2 = rowwise_pairs(e, y)
    assert len(m) == len(m2) and len(nm) == len(nm2)
    sub = 400
    sub_pairs = sub * (sub - 1) // 2
    t = interleave({"row": lambda: rowwise_pairs(e, y), "blocked": lambda: all_pair_scores(e, y, block=2048)},
                   args.rounds)
    comps = [compare(f"all-pairs scores, N = {args.n}", t, "blocked", "row", n_pairs, "pairs/s")]
    comps[0].gandiff = f"all_pair_scores, blocked tiles (2048), {args.threads} thread(s)"
    comps[0].reference = f"one row at a time, {args.threads} thread(s)"
    # The Python double loop is timed on N = 400 only: both sides at that size.
    t = interleave({"python": lambda: python_pairs(e[:sub], y[:sub]),
                    "blocked": lambda: all_pair_scores(e[:sub], y[:sub], block=2048)}, args.rounds)
    c = compare(f"all-pairs scores, N = {sub}", t, "blocked", "python", sub_pairs, "pairs/s")
    c.gandiff, c.reference = "all_pair_scores, blocked tiles", "Python double loop"
    comps.append(c)

    f = rng.standard_normal((args.templates, args.dim), dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    ids = np.arange(args.templates) * 3 + 1
    i1, i2 = rng.integers(0, args.templates, args.pairs), rng.integers(0, args.templates, args.pairs)
    assert np.allclose(score_pairs(f, ids, ids[i1], ids[i2]), gather_pairs(f, i1, i2), atol=1e-5)
    t = interleave({"gather": lambda: gather_pairs(f, i1, i2), "ijb": lambda: score_pairs(f, ids, ids[i1], ids[i2])},
                   args.rounds)
    c = compare(f"IJB template pairs ({args.templates} templates)", t, "ijb", "gather", args.pairs, "pairs/s")
    c.gandiff, c.reference = "score_pairs, blocked products", "gather + dot (insightface)"
    comps.append(c)

    lab = np.r_[np.ones(len(m), bool), np.zeros(len(nm), bool)]
    sc = np.r_[m, nm]
    t = interleave({"sklearn": lambda: roc_curve(lab, sc, drop_intermediate=False), "ours": lambda: roc(m, nm)},
                   args.rounds)
    c = compare("ROC", t, "ours", "sklearn", len(sc), "scores/s")
    c.gandiff, c.reference = "roc: sorted + searchsorted", "sklearn.metrics.roc_curve"
    comps.append(c)
    return comps


if __name__ == "__main__":
    main()
