"""Demographic fairness of a face recognizer: per-group accuracy (RFW) and error-rate differentials.

RFW-style per-group accuracy with its std and SER; at one threshold fixed on the pooled scores at a global FMR
target, each group's FMR / FNMR summarised by FDR, IR and GARBE (formulas and sources in the design notes).
An FMR target ``t`` needs ``ceil(1 / t)`` non-mated pairs; otherwise the number reads "not measurable". Where
a definition divides by a zero rate, that rate is replaced by its one-sided Clopper-Pearson upper bound and
listed in ``bounded``: never ``inf``, and 0/0 is never read as 1.

Design: docs/design.md#fairness-metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gandiff.evaluation.distributions import fnmr_at_fmr

THRESHOLD_RULES = ("max_tmr", "nonmated_score")
CONFIDENCE = 0.95


def clopper_pearson_upper(errors: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of a binomial rate (Clopper & Pearson 1934): the ``confidence``
    quantile of ``Beta(errors + 1, trials - errors)``; 1 when every trial erred."""
    from scipy.stats import beta

    if trials < 1 or not 0 <= errors <= trials:
        raise ValueError(f"clopper_pearson_upper: needs 0 <= errors <= trials and trials >= 1, got {errors}/{trials}")
    if errors == trials:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, trials - errors))


def min_nonmated_pairs(fmr: float) -> int | None:
    """The fewest non-mated pairs that can resolve an FMR target: the smallest ``M`` with ``M * fmr >= 1``
    (None for a target of 0, which no finite number resolves)."""
    if fmr <= 0:
        return None
    m = math.ceil(1.0 / fmr)
    while (m - 1) * fmr >= 1:  # 1 / fmr rounded up past an exact integer
        m -= 1
    while m * fmr < 1:
        m += 1
    return m


def not_measurable(pairs: int, fmr: float, where: str = "") -> str:
    """The text reported instead of a number that ``pairs`` non-mated pairs cannot resolve."""
    need = min_nonmated_pairs(fmr)
    needs = f">= {need}" if need is not None else "an infinite number (target 0)"
    return f"not measurable: {pairs} non-mated pairs{where}, FMR target {fmr:g} needs {needs}"


def is_measurable(value: Any) -> bool:
    return not isinstance(value, str)


def _bounded(rates: np.ndarray, trials: np.ndarray | None, confidence: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``rates`` with every zero replaced by its Clopper-Pearson bound from ``trials`` (module doc); and the mask
    of replaced entries."""
    zero = rates == 0
    if not zero.any():
        return rates, zero
    if trials is None:
        raise ValueError(f"{what}: a zero rate needs the number of trials of each group for its Clopper-Pearson bound")
    out = rates.copy()
    out[zero] = [clopper_pearson_upper(0, int(n), confidence) for n in np.asarray(trials)[zero]]
    return out, zero


def rfw_summary(accuracy: Mapping[str, float], pairs: Mapping[str, int] | None = None,
                confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Per-group accuracies -> mean, STD (population, ``ddof=0``) and SER. An error-free group's error rate in
    SER is its Clopper-Pearson upper bound over its ``pairs`` (module doc), listed in ``ser_bounded``."""
    if not accuracy:
        return {"groups": {}, "mean": None, "std": None, "std_ddof": 0, "ser": None, "ser_bounded": []}
    names = list(accuracy)
    acc = np.asarray([accuracy[g] for g in names], dtype=np.float64)
    # errors of a 10-fold accuracy over n pairs are (1 - acc) n; a group with none gets its bound
    err, zero = _bounded(np.clip(1.0 - acc, 0.0, 1.0), None if pairs is None else np.array([pairs[g] for g in names]),
                         confidence, "rfw_summary")
    return {"groups": {k: float(v) for k, v in accuracy.items()}, "mean": float(acc.mean()),
            "std": float(acc.std(ddof=0)), "std_ddof": 0, "ser": float(err.max() / err.min()),
            "ser_bounded": [g for g, z in zip(names, zero) if z]}


def error_rates_at(mated: np.ndarray, nonmated: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FMR, FNMR) of one group at a fixed threshold; nan where the group has no pairs of that kind."""
    m, n = np.asarray(mated), np.asarray(nonmated)
    fmr = float(np.mean(n >= threshold)) if len(n) else math.nan
    fnmr = float(np.mean(m < threshold)) if len(m) else math.nan
    return fmr, fnmr


def nonmated_score_threshold(nonmated: np.ndarray, fmr: float) -> float:
    """The FDR authors' threshold (``bob.measure.far_threshold``): the lowest non-mated score ``s`` with
    ``#(nonmated >= s) / N <= fmr``; just above the highest non-mated score when even that one is too many,
    just below the lowest when ``fmr`` is 1."""
    s = np.sort(np.asarray(nonmated, dtype=np.float64))
    if len(s) == 0:
        raise ValueError("nonmated_score_threshold: needs non-mated scores")
    if fmr >= 1 - np.finfo(np.float64).eps:
        return float(np.nextafter(s[0], -np.inf))
    values = np.unique(s)[::-1]  # candidate thresholds, highest first
    accepted = len(s) - np.searchsorted(s, values, side="left")  # non-mated scores >= each candidate
    ok = accepted / len(s) <= fmr  # a prefix: accepted grows as the candidate falls
    if not ok[0]:
        return float(np.nextafter(values[0], np.inf))
    return float(values[np.flatnonzero(ok)[-1]])


def fdr(fmr: np.ndarray, fnmr: np.ndarray, alpha: float = 0.5) -> float:
    """Fairness Discrepancy Rate ``1 - (alpha max|dFMR| + (1 - alpha) max|dFNMR|)`` over group pairs."""
    fmr, fnmr = np.asarray(fmr, np.float64), np.asarray(fnmr, np.float64)
    a = float(fmr.max() - fmr.min())  # max_{i,j} |x_i - x_j| is the range
    b = float(fnmr.max() - fnmr.min())
    return 1.0 - (alpha * a + (1.0 - alpha) * b)


def inequity_rate(fmr: np.ndarray, fnmr: np.ndarray, alpha: float = 0.5, beta: float = 0.5,
                  nonmated_pairs: np.ndarray | None = None, mated_pairs: np.ndarray | None = None,
                  confidence: float = CONFIDENCE) -> float:
    """Inequity Rate ``(max FMR / min FMR)^alpha (max FNMR / min FNMR)^beta``. Where a minimum is 0 the zero
    rates of that kind become their Clopper-Pearson bounds over the group's pairs (module doc)."""

    def ratio(x: np.ndarray, trials: np.ndarray | None, what: str) -> float:
        x = np.asarray(x, np.float64)
        if x.min() > 0:
            return float(x.max() / x.min())
        x, _ = _bounded(x, trials, confidence, f"inequity_rate ({what})")
        return float(x.max() / x.min())

    return ratio(fmr, nonmated_pairs, "FMR") ** alpha * ratio(fnmr, mated_pairs, "FNMR") ** beta


def gini(x: np.ndarray, trials: np.ndarray | None = None, confidence: float = CONFIDENCE) -> float:
    """Gini coefficient with the ``n / (n - 1)`` correction (Howard et al. 2022, Eq. 7). All-zero rates (mean 0,
    no value by the definition) become their Clopper-Pearson bounds over ``trials`` (module doc)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError(f"gini: needs at least 2 groups, got {n}")
    if x.mean() == 0:
        x, _ = _bounded(x, trials, confidence, "gini (all rates are zero)")
    return float(n / (n - 1) * np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * x.mean()))


def garbe(fmr: np.ndarray, fnmr: np.ndarray, alpha: float = 0.5, nonmated_pairs: np.ndarray | None = None,
          mated_pairs: np.ndarray | None = None, confidence: float = CONFIDENCE) -> float:
    """GARBE ``alpha G(FMR) + (1 - alpha) G(FNMR)`` (0 = equal error rates across groups)."""
    return alpha * gini(fmr, nonmated_pairs, confidence) + (1.0 - alpha) * gini(fnmr, mated_pairs, confidence)


def differential_report(mated: Mapping[str, np.ndarray], nonmated: Mapping[str, np.ndarray],
                        global_fmr: float = 1e-3, alpha: float = 0.5, beta: float = 0.5,
                        threshold: str = "max_tmr", confidence: float = CONFIDENCE,
                        check_resolution: bool = True) -> dict[str, Any]:
    """Fix ``tau`` at ``global_fmr`` on the pooled scores of all groups (rule ``threshold``, module doc), then
    per-group FMR / FNMR and FDR, IR, GARBE. Groups missing either kind of pair are listed and left out.

    Numbers the data cannot resolve (module doc, ``check_resolution``) are the text of :func:`not_measurable`;
    ``measurable`` says whether the summaries are numbers. ``bounded`` lists the groups whose zero rate entered
    IR or GARBE as its Clopper-Pearson bound."""
    if threshold not in THRESHOLD_RULES:
        raise ValueError(f"differential_report: threshold={threshold!r}: must be one of {THRESHOLD_RULES}")
    groups = [g for g in mated if len(mated[g]) and len(nonmated.get(g, ()))]
    skipped = sorted((set(mated) | set(nonmated)) - set(groups))
    need = min_nonmated_pairs(global_fmr)
    base = {"global_fmr": global_fmr, "threshold_rule": threshold, "min_nonmated_pairs": need, "alpha": alpha,
            "beta": beta, "confidence": confidence, "skipped_groups": skipped}
    if len(groups) < 2:
        note = "needs at least two groups with both mated and non-mated pairs"
        return {**base, "threshold": None, "groups": {}, "fdr": None, "ir": None, "garbe": None,
                "measurable": False, "note": note}
    n_m = np.array([len(mated[g]) for g in groups])
    n_n = np.array([len(nonmated[g]) for g in groups])
    counts = {g: {"mated_pairs": int(a), "nonmated_pairs": int(b)} for g, a, b in zip(groups, n_m, n_n)}
    pooled = int(n_n.sum())
    resolved = (lambda n: need is not None and n >= need) if check_resolution else (lambda n: True)
    base["pooled_nonmated_pairs"] = pooled
    if not resolved(pooled):
        note = not_measurable(pooled, global_fmr, " pooled")
        return {**base, "threshold": note, "measurable": False, "note": note, "fdr": note, "ir": note, "garbe": note,
                "groups": {g: {"fmr": note, "fnmr": note, **counts[g]} for g in groups}}
    pooled_m = np.concatenate([np.asarray(mated[g]) for g in groups])
    pooled_n = np.concatenate([np.asarray(nonmated[g]) for g in groups])
    if threshold == "max_tmr":
        tau = fnmr_at_fmr(pooled_m, pooled_n, global_fmr)[1]
    else:
        tau = nonmated_score_threshold(pooled_n, global_fmr)
    rates = {g: error_rates_at(mated[g], nonmated[g], tau) for g in groups}
    out_groups = {g: {"fmr": rates[g][0] if resolved(counts[g]["nonmated_pairs"]) else
                      not_measurable(counts[g]["nonmated_pairs"], global_fmr),
                      "fnmr": rates[g][1], **counts[g]} for g in groups}
    short = [g for g in groups if not resolved(counts[g]["nonmated_pairs"])]
    if short:
        worst = min(short, key=lambda g: counts[g]["nonmated_pairs"])
        note = not_measurable(counts[worst]["nonmated_pairs"], global_fmr, f" in group {worst!r}")
        return {**base, "threshold": float(tau), "measurable": False, "note": note, "fdr": note, "ir": note,
                "garbe": note, "groups": out_groups}
    fm = np.array([rates[g][0] for g in groups])
    fn = np.array([rates[g][1] for g in groups])
    bounded: dict[str, list[str]] = {"fmr": [], "fnmr": []}
    for kind, x in (("fmr", fm), ("fnmr", fn)):
        if x.min() == 0:  # IR's ratio (and the Gini when all are zero) uses the bounds of these groups
            bounded[kind] = [g for g, v in zip(groups, x) if v == 0]
    return {**base, "threshold": float(tau), "measurable": True, "groups": out_groups,
            "fdr": fdr(fm, fn, alpha), "ir": inequity_rate(fm, fn, alpha, beta, n_n, n_m, confidence),
            "garbe": garbe(fm, fn, alpha, n_n, n_m, confidence), "bounded": bounded}


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


# --------------------------------------------------------------------------------------------- reporting


def conventions(threshold_rule: str, confidence: float, global_fmr: float) -> str:
    """The conventions behind the fairness numbers, in words (the report's fairness section)."""
    rule = ("on the ROC point with the highest TMR among those with FMR <= target, the highest score among "
            "equal-TMR candidates (ISO/IEC 19795-1; gandiff's fnmr_at_fmr)" if threshold_rule == "max_tmr" else
            "on the lowest non-mated score whose FMR, counting that score, is <= target (the FDR authors' code: "
            "bob.measure.far_threshold in github.com/tiagofrepereira2012/fdr)")
    return (f"One threshold for all groups, set on their pooled scores at FMR {global_fmr:g}, {rule}; a pair is "
            "accepted when score >= threshold. FDR: de Freitas Pereira & Marcel, IEEE T-BIOM 2021 (alpha 0.5); IR: "
            "Grother / Howard et al. 2022 (alpha = beta = 0.5); GARBE: Howard et al. 2022 (Gini with the n/(n-1) "
            "correction). Mean acc and STD: RFW-style 10-fold accuracy per group (Wang et al., ICCV 2019); STD is "
            "the population standard deviation over the groups (ddof = 0, numpy.std's default; ddof = 1 would be "
            "sqrt(k/(k-1)) times larger for k groups). SER: Wang & Deng, CVPR 2020. "
            f"An FMR target t is resolved only by at least ceil(1/t) = {min_nonmated_pairs(global_fmr)} non-mated "
            "pairs, pooled (for the threshold) and in each group (for its FMR): otherwise the number reads \"not "
            "measurable\" with the counts. Where IR, SER or the Gini would divide by a zero rate, each zero rate is "
            f"replaced by its one-sided {confidence:.0%} Clopper-Pearson upper bound 1 - (1 - {confidence:g})^(1/n) "
            "over the group's n pairs (Clopper & Pearson, Biometrika 1934); such groups are listed under 'bounded'.")


def fairness_items(items: Mapping[str, Mapping[str, Any]]):
    """(item key, attribute, differentials, rfw) of every evaluated item's fairness block."""
    for key, r in items.items():
        for attr, f in (r.get("fairness") or {}).items():
            yield key, attr, f.get("differentials") or {}, f.get("rfw") or {}


def summary_rows(items: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated item and attribute: numbers, or the "not measurable" text in their place."""
    rows = []
    for key, attr, d, rfw in fairness_items(items):
        bounded = sorted({g for v in (d.get("bounded") or {}).values() for g in v} | set(rfw.get("ser_bounded") or []))
        rows.append({"item": key, "attribute": attr, "mean acc": rfw.get("mean"), "std": rfw.get("std"),
                     "SER": rfw.get("ser"), "FDR": d.get("fdr"), "IR": d.get("ir"), "GARBE": d.get("garbe"),
                     "threshold": d.get("threshold"), "pooled non-mated": d.get("pooled_nonmated_pairs"),
                     "bounded": ", ".join(bounded) or None})
    return rows


def group_rows(items: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per item, attribute and group: pair counts, FMR, FNMR (or "not measurable") and 1 - accuracy."""
    rows = []
    for key, attr, d, rfw in fairness_items(items):
        acc = rfw.get("groups") or {}
        for g, v in (d.get("groups") or {}).items():
            rows.append({"item": key, "attribute": attr, "group": g, "non-mated": v.get("nonmated_pairs"),
                         "mated": v.get("mated_pairs"), "FMR": v.get("fmr"), "FNMR": v.get("fnmr"),
                         "1 - accuracy": 1.0 - acc[g] if g in acc else None})
    return rows


def tracker_rows(items: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fairness numbers in long form for a W&B table (one type per column): ``value`` is the number or
    None, ``shown`` what the report shows (the number, or the "not measurable" text)."""
    rows = []
    for r in summary_rows(items):
        for metric in ("mean acc", "std", "SER", "FDR", "IR", "GARBE", "threshold"):
            rows.append(_long(r["item"], r["attribute"], "", metric, r[metric]))
    for r in group_rows(items):
        for metric in ("FMR", "FNMR", "1 - accuracy"):
            rows.append(_long(r["item"], r["attribute"], r["group"], metric, r[metric]))
    return rows


def _long(item: str, attr: str, group: str, metric: str, v: Any) -> dict[str, Any]:
    number = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    shown = "" if v is None else (f"{number:.6g}" if number is not None else str(v))
    return {"item": item, "attribute": attr, "group": group, "metric": metric, "value": number, "shown": shown}
