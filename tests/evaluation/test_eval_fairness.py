"""Fairness metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gandiff.evaluation import fairness as F


def test_rfw_summary_hand_computed():
    s = F.rfw_summary({"African": 0.90, "Asian": 0.92, "Caucasian": 0.96, "Indian": 0.94})
    assert s["mean"] == pytest.approx(0.93)
    assert s["std"] == pytest.approx(np.sqrt((0.03**2 + 0.01**2 + 0.03**2 + 0.01**2) / 4))
    assert s["ser"] == pytest.approx(0.10 / 0.04)  # worst error / best error
    assert F.rfw_summary({"a": 1.0, "b": 0.9})["ser"] == math.inf
    assert F.rfw_summary({"a": 1.0, "b": 1.0})["ser"] == 1.0


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
    assert F.inequity_rate([0.0, 0.1], [0.1, 0.1]) == math.inf


def test_differential_report_uses_one_global_threshold():
    mated = {"f": np.array([0.9, 0.8, 0.3]), "m": np.array([0.95, 0.85, 0.75])}
    nonmated = {"f": np.array([0.1, 0.2, 0.6, 0.0]), "m": np.array([0.1, 0.05, 0.0, 0.15])}
    # pooled: 8 non-mated; FMR <= 1/8 allows one false match (0.6); the highest TMR with it is at tau = 0.3
    r = F.differential_report(mated, nonmated, global_fmr=0.125)
    assert r["threshold"] == pytest.approx(0.3)
    assert r["groups"]["f"]["fmr"] == pytest.approx(0.25) and r["groups"]["m"]["fmr"] == 0.0
    assert r["groups"]["f"]["fnmr"] == 0.0 and r["groups"]["m"]["fnmr"] == 0.0
    assert r["fdr"] == pytest.approx(1 - 0.5 * 0.25)
    assert r["ir"] == math.inf  # one group has FMR 0, the other does not
    # no false match allowed: tau above 0.6 -> 0.75; f loses 0.3 (FNMR 1/3), m keeps all
    r = F.differential_report(mated, nonmated, global_fmr=0.0)
    assert r["threshold"] == pytest.approx(0.75)
    assert r["groups"]["f"]["fnmr"] == pytest.approx(1 / 3) and r["groups"]["m"]["fnmr"] == 0.0
    assert r["fdr"] == pytest.approx(1 - 0.5 / 3)
    one = F.differential_report({"f": mated["f"]}, {"f": nonmated["f"], "x": [0.1]})
    assert one["fdr"] is None and one["skipped_groups"] == ["x"]


def test_group_accuracy_separable_and_not():
    rng = np.random.default_rng(0)
    good = F.group_accuracy(rng.uniform(0.6, 1.0, 200), rng.uniform(-0.2, 0.3, 500))
    assert good["accuracy"] == 1.0 and good["pairs"] == 400
    noisy = F.group_accuracy(rng.normal(0.3, 0.2, 300), rng.normal(0.1, 0.2, 300))
    assert 0.6 < noisy["accuracy"] < 0.8
    assert F.group_accuracy([0.5], [0.1])["accuracy"] is None
