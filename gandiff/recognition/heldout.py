"""A held-out verification set made from the training dataset's own identities.

Public benchmarks need downloads; a synthetic dataset can always be checked against itself
(``trainer.heldout``): ``images`` (closed set: part of each identity's images held out, the check that works
for tiny datasets) or ``identities`` (open set: whole identities held out, what benchmarks measure). Pairs
follow the insightface ``.bin`` convention (pair ``p`` = images ``2p`` and ``2p + 1``), half mated, half
non-mated, shuffled so each of the 10 folds holds both.

Design: docs/design.md#held-out-pairs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass
class HeldoutSplit:
    train: np.ndarray  # (N_train,) dataset indices used for training, sorted
    heldout: np.ndarray  # (N_held,) dataset indices held out, sorted
    label_map: dict[int, int]  # dataset label -> training label (identity of all kept labels)

    @property
    def num_classes(self) -> int:
        return len(self.label_map)


def _by_label(labels: np.ndarray) -> dict[int, np.ndarray]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels.tolist()):
        groups[int(y)].append(i)
    return {y: np.asarray(ix) for y, ix in sorted(groups.items())}


def split_heldout(labels: np.ndarray, mode: str, fraction: float, seed: int) -> HeldoutSplit:
    """Split dataset indices into training and held-out ones (see the module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups = _by_label(labels)
    everything = np.arange(len(labels))
    if mode == "none" or fraction <= 0:
        return HeldoutSplit(everything, np.zeros(0, np.int64), {y: i for i, y in enumerate(groups)})
    held: list[np.ndarray] = []
    kept_labels = list(groups)
    if mode == "images":
        for ix in groups.values():
            n = len(ix)
            if n < 4:
                continue
            k = int(np.clip(round(fraction * n), 2, n - 2))
            held.append(np.sort(rng.choice(ix, size=k, replace=False)))
    elif mode == "identities":
        eligible = [y for y, ix in groups.items() if len(ix) >= 2]
        k = max(2, round(fraction * len(groups)))
        if len(groups) - k >= 2 and len(eligible) >= k:
            chosen = set(rng.choice(eligible, size=k, replace=False).tolist())
            held = [groups[y] for y in sorted(chosen)]
            kept_labels = [y for y in groups if y not in chosen]
    else:
        raise ValueError(f"trainer.heldout={mode!r}: must be images, identities or none")
    heldout = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(everything, heldout)
    if mode == "identities":
        kept = set(kept_labels)
        train = train[np.isin(labels[train], list(kept))]
    return HeldoutSplit(train, heldout, {y: i for i, y in enumerate(kept_labels)})


def build_pairs(labels: np.ndarray, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced verification pairs over ``labels`` (N,).

    Returns ``pairs`` (P, 2) of positions into ``labels`` and ``issame`` (P,) bool, shuffled. P is even and
    at most ``max_pairs``; mated and non-mated pairs are equally many. Empty when there are fewer than
    two identities or no identity with two images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups = _by_label(labels)
    mated_all = [(a, b) for ix in groups.values() for j, a in enumerate(ix) for b in ix[j + 1:]]
    if len(groups) < 2 or not mated_all:
        return np.zeros((0, 2), np.int64), np.zeros(0, bool)
    n_half = min(max_pairs // 2, len(mated_all))
    mated = np.asarray(mated_all)[rng.choice(len(mated_all), size=n_half, replace=False)]
    # Non-mated: rejection-sample distinct unordered pairs of different identities.
    n = len(labels)
    total_nonmated = (n * n - sum(len(ix) ** 2 for ix in groups.values())) // 2
    n_half = min(n_half, total_nonmated)
    mated = mated[:n_half]
    seen: set[tuple[int, int]] = set()
    non: list[tuple[int, int]] = []
    while len(non) < n_half:
        a, b = (int(v) for v in rng.integers(0, n, size=2))
        if labels[a] == labels[b]:
            continue
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            non.append(key)
    pairs = np.concatenate([mated.reshape(-1, 2), np.asarray(non, np.int64).reshape(-1, 2)])
    issame = np.concatenate([np.ones(len(mated), bool), np.zeros(len(non), bool)])
    order = rng.permutation(len(pairs))
    return pairs[order].astype(np.int64), issame[order]
