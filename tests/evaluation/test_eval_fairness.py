"""Fairness metrics on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.evaluation import fairness as F


def test_rfw_summary_hand_computed():
    s = F.rfw_summary({"African": 0.90, "Asian": 0.92, "Caucasian": 0.96, "Indian": 0.94})
    assert s["mean"] == pytest.approx(0.93)
    assert s["std"] == pytest.approx(np.sqrt((0.03**2 + 0.01**2 + 0.03**2 + 0.01**2) / 4))
    assert s["ser"] == pytest.approx(0.10 / 0.04)  # worst error / best error
    assert s["std_ddof"] == 0 and s["ser_bounded"] == []
    # an error-free group: its error rate is the 95 % Clopper-Pearson upper bound 1 - 0.05^(1/n), never inf
    z = F.rfw_summary({"a": 1.0, "b": 0.9}, pairs={"a": 60, "b": 60})
    assert z["ser"] == pytest.approx(0.1 / (1 - 0.05 ** (1 / 60))) and z["ser_bounded"] == ["a"]
    assert F.rfw_summary({"a": 1.0, "b": 1.0}, pairs={"a": 40, "b": 40})["ser"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="number of trials"):
        F.rfw_summary({"a": 1.0, "b": 0.9})


def test_fdr_ir_garbe_hand_computed():
    fmr = np.array([0.001, 0.002, 0.004])
    fnmr = np.array([0.10, 0.05, 0.20])
    # A = 0.003, B = 0.15 -> FDR = 1 - (0.5*0.003 + 0.5*0.15) = 0.9235
    assert F.fdr(fmr, fnmr) == pytest.approx(0.9235)
    assert F.fdr(fmr, fnmr, alpha=1.0) == pytest.approx(0.997)
    # IR = (0.004/0.001)^0.5 * (0.20/0.05)^0.5 = 2 * 2
    assert F.inequity_rate(fmr, fnmr) == pytest.approx(4.0)
    # Gini of (1, 2, 4): sum|xi-xj| = 2*(1+3+2) = 12; mean 7/3; n=3: 3/2 * 12 / (2*9*7/3) = 18/42
    assert F.gini([1, 2, 4]) == pytest.approx(3 / 7)
    assert F.gini(fmr) == pytest.approx(3 / 7)  # scale-free
    # fnmr (0.1, 0.05, 0.2) = 0.05 * (2, 1, 4): same Gini
    assert F.garbe(fmr, fnmr) == pytest.approx(3 / 7)
    assert F.garbe([0.1, 0.1], [0.2, 0.2]) == 0.0 and F.fdr([0.1, 0.1], [0.2, 0.2]) == 1.0
    # a zero minimum: the zero FMR becomes its Clopper-Pearson bound over that group's 1000 non-mated pairs
    bound = 1 - 0.05 ** (1 / 1000)
    assert F.inequity_rate([0.0, 0.1], [0.1, 0.1], nonmated_pairs=[1000, 50]) == pytest.approx((0.1 / bound) ** 0.5)
    with pytest.raises(ValueError, match="Clopper-Pearson"):
        F.inequity_rate([0.0, 0.1], [0.1, 0.1])
    # the Gini of all-zero rates has no value by its definition: bounds over (100, 400) trials instead
    b1, b4 = 1 - 0.05 ** (1 / 100), 1 - 0.05 ** (1 / 400)
    assert F.gini([0.0, 0.0], trials=[100, 400]) == pytest.approx(2 * 2 * (b1 - b4) / (2 * 4 * (b1 + b4) / 2))
    assert F.gini([0.0, 0.2]) == pytest.approx(1.0)  # defined: no bound used


def test_differential_report_uses_one_global_threshold():
    mated = {"f": np.array([0.9, 0.8, 0.3]), "m": np.array([0.95, 0.85, 0.75])}
    nonmated = {"f": np.array([0.1, 0.2, 0.6, 0.0]), "m": np.array([0.1, 0.05, 0.0, 0.15])}
    # pooled: 8 non-mated; FMR <= 1/8 allows one false match (0.6); the highest TMR with it is at tau = 0.3
    # (4 non-mated pairs a group cannot resolve FMR 1/8: check_resolution=False for the hand-computed values)
    r = F.differential_report(mated, nonmated, global_fmr=0.125, check_resolution=False)
    assert r["threshold"] == pytest.approx(0.3) and r["measurable"]
    assert r["groups"]["f"]["fmr"] == pytest.approx(0.25) and r["groups"]["m"]["fmr"] == 0.0
    assert r["groups"]["f"]["fnmr"] == 0.0 and r["groups"]["m"]["fnmr"] == 0.0
    assert r["fdr"] == pytest.approx(1 - 0.5 * 0.25)
    # one group has FMR 0: its bound over 4 pairs (0.53, above f's 0.25); both FNMR 0: bounds over 3 pairs each = 1
    b4 = 1 - 0.05 ** (1 / 4)
    assert r["ir"] == pytest.approx((max(b4, 0.25) / min(b4, 0.25)) ** 0.5)
    assert r["bounded"] == {"fmr": ["m"], "fnmr": ["f", "m"]}
    # no false match allowed: tau above 0.6 -> 0.75; f loses 0.3 (FNMR 1/3), m keeps all
    r = F.differential_report(mated, nonmated, global_fmr=0.0, check_resolution=False)
    assert r["threshold"] == pytest.approx(0.75)
    assert r["groups"]["f"]["fnmr"] == pytest.approx(1 / 3) and r["groups"]["m"]["fnmr"] == 0.0
    assert r["fdr"] == pytest.approx(1 - 0.5 / 3)
    one = F.differential_report({"f": mated["f"]}, {"f": nonmated["f"], "x": [0.1]})
    assert one["fdr"] is None and one["skipped_groups"] == ["x"]


def test_differential_report_not_measurable_with_counts():
    rng = np.random.default_rng(1)
    mated = {"f": rng.uniform(0.4, 1, 30), "m": rng.uniform(0.4, 1, 30)}
    nonmated = {"f": rng.uniform(-0.3, 0.5, 75), "m": rng.uniform(-0.3, 0.5, 75)}
    # pooled 150 < 1000 at FMR 1e-3: no threshold, nothing is a number
    r = F.differential_report(mated, nonmated, global_fmr=1e-3)
    text = "not measurable: 150 non-mated pairs pooled, FMR target 0.001 needs >= 1000"
    assert r["measurable"] is False and r["threshold"] == text and r["fdr"] == r["ir"] == r["garbe"] == text
    assert r["groups"]["f"] == {"fmr": text, "fnmr": text, "mated_pairs": 30, "nonmated_pairs": 75}
    # pooled 150 >= 100 resolves tau at 1e-2, but a group of 75 does not resolve its FMR
    r = F.differential_report(mated, nonmated, global_fmr=1e-2)
    assert isinstance(r["threshold"], float) and r["measurable"] is False
    assert r["groups"]["f"]["fmr"] == "not measurable: 75 non-mated pairs, FMR target 0.01 needs >= 100"
    assert isinstance(r["groups"]["f"]["fnmr"], float)
    assert r["fdr"] == "not measurable: 75 non-mated pairs in group 'f', FMR target 0.01 needs >= 100"
    # 1/75 <= 0.02: measurable, and equal to the definitions computed from the group rates
    r = F.differential_report(mated, nonmated, global_fmr=0.02)
    assert r["measurable"] and r["min_nonmated_pairs"] == 50
    fm = np.array([np.mean(nonmated[g] >= r["threshold"]) for g in "fm"])
    fn = np.array([np.mean(mated[g] < r["threshold"]) for g in "fm"])
    assert r["fdr"] == pytest.approx(F.fdr(fm, fn)) and r["garbe"] == pytest.approx(F.garbe(fm, fn, 0.5, [75, 75],
                                                                                                     [30, 30]))
    assert F.min_nonmated_pairs(1e-3) == 1000 and F.min_nonmated_pairs(0.02) == 50 and F.min_nonmated_pairs(0.3) == 4
    assert F.min_nonmated_pairs(0.0) is None


def test_clopper_pearson_upper_against_beta_and_binomial():
    from scipy.stats import binom

    assert F.clopper_pearson_upper(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert F.clopper_pearson_upper(0, 1000) == pytest.approx(3 / 1000, rel=0.01)  # the rule of three
    for k, n in ((0, 20), (3, 50), (10, 12)):
        p = F.clopper_pearson_upper(k, n)
        assert binom.cdf(k, n, p) == pytest.approx(0.05)  # the bound's definition: P(X <= k | p_U) = alpha
    assert F.clopper_pearson_upper(5, 5) == 1.0


def test_nonmated_score_threshold_matches_its_definition():
    """bob.measure.far_threshold, as the FDR authors' code calls it: the lowest non-mated score s with
    #(nonmated >= s) / N <= target (brute force over every candidate here)."""
    rng = np.random.default_rng(3)
    for n, target in ((200, 0.01), (1000, 1e-3), (57, 0.05), (40, 0.0)):
        scores = np.round(rng.normal(0, 0.2, n), 2)  # ties on purpose
        ok = [s for s in np.unique(scores) if np.mean(scores >= s) <= target]
        expected = min(ok) if ok else np.nextafter(scores.max(), np.inf)
        assert F.nonmated_score_threshold(scores, target) == expected
    assert F.nonmated_score_threshold(np.array([0.1, 0.2]), 1.0) < 0.1
    mated = {"f": np.array([0.9, 0.8, 0.3]), "m": np.array([0.95, 0.85, 0.75])}
    nonmated = {"f": np.array([0.1, 0.2, 0.6, 0.0]), "m": np.array([0.1, 0.05, 0.0, 0.15])}
    # one false match of 8 allowed: tau on the non-mated score 0.6 itself (max_tmr puts it at the mated 0.3)
    r = F.differential_report(mated, nonmated, global_fmr=0.125, threshold="nonmated_score", check_resolution=False)
    assert r["threshold"] == 0.6 and r["groups"]["f"]["fmr"] == 0.25 and r["groups"]["f"]["fnmr"] == pytest.approx(1 / 3)


def test_group_accuracy_separable_and_not():
    rng = np.random.default_rng(0)
    good = F.group_accuracy(rng.uniform(0.6, 1.0, 200), rng.uniform(-0.2, 0.3, 500))
    assert good["accuracy"] == 1.0 and good["pairs"] == 400
    noisy = F.group_accuracy(rng.normal(0.3, 0.2, 300), rng.normal(0.1, 0.2, 300))
    assert 0.6 < noisy["accuracy"] < 0.8
    assert F.group_accuracy([0.5], [0.1])["accuracy"] is None
