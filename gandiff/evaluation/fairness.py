"""Demographic fairness of a face recognizer: per-group accuracy (RFW) and error-rate differentials.

Two families of numbers, for any dataset whose identities carry group labels (gender, age, race):

- **RFW-style** (Wang et al., "Racial Faces in-the-Wild", ICCV 2019, and its successors): verification
  accuracy of each group on its own pairs (negatives drawn *within* the group), then the mean, the
  standard deviation over groups (population std, ``ddof=0``) and the skewed error ratio
  ``SER = max_g (1 - acc_g) / min_g (1 - acc_g)`` (Wang & Deng, "Mitigating bias in face recognition
  using skewness-aware reinforcement learning", CVPR 2020).
- **Differentials at one operating point**: a single threshold ``tau`` is fixed on the pooled scores of all
  groups at a global FMR (e.g. 1e-3), then each group's ``FMR_g(tau)`` and ``FNMR_g(tau)`` are measured and
  summarised by
  - FDR, the Fairness Discrepancy Rate (de Freitas Pereira & Marcel, "Fairness in biometrics: a figure of
    merit to assess biometric verification systems", IEEE T-BIOM 2021):
    ``A = max_{i,j} |FMR_i - FMR_j|``, ``B = max_{i,j} |FNMR_i - FNMR_j|``, ``FDR = 1 - (alpha A + (1 - alpha) B)``
    (1 = fair);
  - IR, the Inequity Rate (Grother, NIST FRVT demographic summaries; analysed by Howard et al. 2022):
    ``IR = (max FMR_g / min FMR_g)^alpha * (max FNMR_g / min FNMR_g)^beta`` (1 = fair; infinite when a group
    has a zero rate);
  - GARBE, the Gini Aggregation Rate for Biometric Equitability (Howard, Laird, Sirotin et al., "Evaluating
    proposed fairness models for face recognition algorithms", 2022):
    ``G(x) = n / (n - 1) * sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))`` (the Gini coefficient with the
    small-sample correction), ``GARBE = alpha G(FMR) + (1 - alpha) G(FNMR)`` (0 = fair).

Scores are similarities; a pair is accepted when ``score >= tau``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gandiff.evaluation.distributions import fnmr_at_fmr


def rfw_summary(accuracy: Mapping[str, float]) -> dict[str, Any]:
    """Per-group accuracies -> mean, STD (population) and SER. SER is infinite when a group is error-free
    and another is not (and 1.0 when every group is error-free)."""
    if not accuracy:
        return {"groups": {}, "mean": None, "std": None, "ser": None}
    acc = np.asarray(list(accuracy.values()), dtype=np.float64)
    err = 1.0 - acc
    if err.min() > 0:
        ser = float(err.max() / err.min())
    else:
        ser = 1.0 if err.max() == 0 else math.inf
    return {"groups": {k: float(v) for k, v in accuracy.items()}, "mean": float(acc.mean()),
            "std": float(acc.std()), "ser": ser}


def error_rates_at(mated: np.ndarray, nonmated: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FMR, FNMR) of one group at a fixed threshold; nan where the group has no pairs of that kind."""
    m, n = np.asarray(mated), np.asarray(nonmated)
    fmr = float(np.mean(n >= threshold)) if len(n) else math.nan
    fnmr = float(np.mean(m < threshold)) if len(m) else math.nan
    return fmr, fnmr


def fdr(fmr: np.ndarray, fnmr: np.ndarray, alpha: float = 0.5) -> float:
    """Fairness Discrepancy Rate ``1 - (alpha max|dFMR| + (1 - alpha) max|dFNMR|)`` over group pairs."""
    fmr, fnmr = np.asarray(fmr, np.float64), np.asarray(fnmr, np.float64)
    a = float(fmr.max() - fmr.min())  # max_{i,j} |x_i - x_j| is the range
    b = float(fnmr.max() - fnmr.min())
    return 1.0 - (alpha * a + (1.0 - alpha) * b)


def inequity_rate(fmr: np.ndarray, fnmr: np.ndarray, alpha: float = 0.5, beta: float = 0.5) -> float:
    """Inequity Rate ``(max FMR / min FMR)^alpha (max FNMR / min FNMR)^beta`` (inf when a minimum is 0 and
    its maximum is not; a ratio 0/0 counts as 1: no group errs)."""

    def ratio(x: np.ndarray) -> float:
        lo, hi = float(np.min(x)), float(np.max(x))
        if lo > 0:
            return hi / lo
        return 1.0 if hi == 0 else math.inf

    return ratio(np.asarray(fmr, np.float64)) ** alpha * ratio(np.asarray(fnmr, np.float64)) ** beta


def gini(x: np.ndarray) -> float:
    """Gini coefficient with the ``n / (n - 1)`` correction (Howard et al. 2022, Eq. 7); 0 when all equal."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError(f"gini: needs at least 2 groups, got {n}")
    mean = x.mean()
    if mean == 0:
        return 0.0
    return float(n / (n - 1) * np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * mean))


def garbe(fmr: np.ndarray, fnmr: np.ndarray, alpha: float = 0.5) -> float:
    """GARBE ``alpha G(FMR) + (1 - alpha) G(FNMR)`` (0 = equal error rates across groups)."""
    return alpha * gini(fmr) + (1.0 - alpha) * gini(fnmr)


def differential_report(mated: Mapping[str, np.ndarray], nonmated: Mapping[str, np.ndarray],
                        global_fmr: float = 1e-3, alpha: float = 0.5, beta: float = 0.5) -> dict[str, Any]:
    """Fix ``tau`` at ``global_fmr`` on the pooled scores of all groups, then per-group FMR / FNMR and FDR,
    IR, GARBE. Groups missing either kind of pair are listed and left out of the summaries."""
    groups = [g for g in mated if len(mated[g]) and len(nonmated.get(g, ()))]
    skipped = sorted((set(mated) | set(nonmated)) - set(groups))
    if len(groups) < 2:
        return {"threshold": None, "global_fmr": global_fmr, "groups": {}, "fdr": None, "ir": None,
                "garbe": None, "skipped_groups": skipped,
                "note": "needs at least two groups with both mated and non-mated pairs"}
    pooled_m = np.concatenate([np.asarray(mated[g]) for g in groups])
    pooled_n = np.concatenate([np.asarray(nonmated[g]) for g in groups])
    _, tau = fnmr_at_fmr(pooled_m, pooled_n, global_fmr)
    rates = {g: error_rates_at(mated[g], nonmated[g], tau) for g in groups}
    fm = np.array([rates[g][0] for g in groups])
    fn = np.array([rates[g][1] for g in groups])
    return {
        "threshold": float(tau), "global_fmr": global_fmr,
        "groups": {g: {"fmr": rates[g][0], "fnmr": rates[g][1], "mated_pairs": int(len(mated[g])),
                       "nonmated_pairs": int(len(nonmated[g]))} for g in groups},
        "fdr": fdr(fm, fn, alpha), "ir": inequity_rate(fm, fn, alpha, beta), "garbe": garbe(fm, fn, alpha),
        "alpha": alpha, "beta": beta, "skipped_groups": skipped,
    }


def group_accuracy(mated: np.ndarray, nonmated: np.ndarray, nfolds: int = 10, seed: int = 0) -> dict[str, Any]:
    """RFW-style accuracy of one group: its mated pairs and as many of its non-mated pairs (sampled with
    ``seed`` when there are more), shuffled into one pair list, then the insightface 10-fold protocol on
    the squared distance ``2 - 2 cos`` (the same protocol and threshold grid as RFW's released code)."""
    from gandiff.evaluation.verification import calculate_roc

    m, n = np.asarray(mated, np.float64), np.asarray(nonmated, np.float64)
    rng = np.random.default_rng(seed)
    if len(n) > len(m):
        n = n[rng.choice(len(n), size=len(m), replace=False)]
    scores = np.concatenate([m, n])
    issame = np.concatenate([np.ones(len(m), bool), np.zeros(len(n), bool)])
    if len(scores) < max(2, nfolds):
        return {"accuracy": None, "accuracy_std": None, "pairs": int(len(scores))}
    order = rng.permutation(len(scores))
    res = calculate_roc(2.0 - 2.0 * scores[order], issame[order], nfolds=nfolds)
    return {"accuracy": float(res["accuracy"].mean()), "accuracy_std": float(res["accuracy"].std()),
            "pairs": int(len(scores))}
