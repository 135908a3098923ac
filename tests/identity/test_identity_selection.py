"""Demographic quotas, distinctiveness and latent edits: the pieces of the identity funnel."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.identity.demographics import QuotaTracker, TargetError, allocate, parse_target
from gandiff.identity.distinct import DistinctSet, similarity_summary
from gandiff.identity.edits import (
    learn_direction,
    load_directions,
    propose_variations,
    save_directions,
    yaw_from_landmarks,
)

AG = ("gender", "age_bin")


def test_marginal_product_keeps_marginals_balanced():
    t = parse_target({"gender": {"female": 0.5, "male": 0.5}, "age": {"20-29": 1, "30-39": 1}}, 6, AG)
    assert t.attributes == AG and t.num == 6
    by_gender = {g: sum(q for c, q in t.quotas.items() if c[0] == g) for g in ("female", "male")}
    by_age = {a: sum(q for c, q in t.quotas.items() if c[1] == a) for a in ("20-29", "30-39")}
    assert by_gender == {"female": 3, "male": 3} and by_age == {"20-29": 3, "30-39": 3}
    assert all(abs(q - 1.5) <= 1 for q in t.quotas.values())


def test_counts_joint_and_uniform_targets():
    t = parse_target({"gender|age_bin": {"female|20-29": 2, "male|70+": 1}}, 3, AG)
    assert t.quotas == {("female", "20-29"): 2, ("male", "70+"): 1}
    u = parse_target("uniform", 36, AG)
    assert len(u.quotas) == 18 and set(u.quotas.values()) == {2}
    assert parse_target(None, 5, AG).quotas == {(): 5}
    # Largest remainders: within one of num * share, summing to num.
    q = allocate({("a",): 1, ("b",): 1, ("c",): 1}, 10)
    assert sorted(q.values()) == [3, 3, 4] and sum(q.values()) == 10


@pytest.mark.parametrize("spec,match", [
    ({"race": "uniform"}, "does not estimate 'race'"),
    ({"gender": {"fem": 1}}, "unknown gender value"),
    ({"height": "uniform"}, "unknown attribute 'height'"),
    ({"gender|age_bin": {"female": 1}}, "expected 2 values"),
    (["gender"], "expected null, 'uniform'"),
])
def test_bad_targets_name_the_problem(spec, match):
    with pytest.raises(TargetError, match=match):
        parse_target(spec, 4, AG)


def test_shortfall_message_names_cells_and_counts():
    t = parse_target({"gender": {"female": 1, "male": 1}}, 2, AG)
    q = QuotaTracker(t)
    q.counts[("male",)].kept = 1
    q.counts[("female",)].seen, q.counts[("female",)].too_similar = 5, 5
    msg = q.shortfall_message(64)
    assert "gender=female: 0 of 1 kept (5 candidates" in msg and "5 rejected as too similar" in msg
    assert "gender=male" not in msg


def test_distinct_set_blocked_max_equals_dense():
    rng = np.random.default_rng(0)
    kept = rng.standard_normal((1000, 16)).astype(np.float32)
    kept /= np.linalg.norm(kept, axis=1, keepdims=True)
    cand = kept[:5] * 0.9 + 0.1 * rng.standard_normal((5, 16)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    ds = DistinctSet(16, 0.5, block=128, capacity=4)  # forces growth and many blocks
    for e in kept:
        ds.add(e, 0.0)
    np.testing.assert_allclose(ds.max_to_kept(cand), (cand @ kept.T).max(axis=1), rtol=1e-6)
    assert DistinctSet(16, 0.5).max_to_kept(cand).tolist() == [-np.inf] * 5


def test_similarity_summary_matches_dense_pairs():
    rng = np.random.default_rng(1)
    e = rng.standard_normal((300, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = e @ e.T
    pairs = s[np.triu_indices(300, 1)]
    out = similarity_summary(e, block=64)
    assert out["pairs"] == len(pairs) and not out["sampled"]
    assert out["max"] == pytest.approx(pairs.max(), abs=1e-6)
    assert out["mean"] == pytest.approx(pairs.mean(), abs=1e-6)
    assert sum(out["histogram"]["counts"]) == len(pairs)
    sub = similarity_summary(e, max_pairs=1000)
    assert sub["sampled"] and sub["pairs"] <= 1000 + 50


def test_directions_recover_a_planted_boundary_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 12)).astype(np.float32)
    normal = np.zeros(12, np.float32)
    normal[3] = 1.0
    gender = np.where(X @ normal > 0, "male", "female").astype(object)
    d = learn_direction("gender", X, gender)
    assert d is not None and d.kind == "binary" and abs(float(d.vector @ normal)) > 0.9 and d.score > 0.9
    age = (X[:, 5] * 10 + 40).astype(object)
    a = learn_direction("age", X, age)
    assert a is not None and float(a.vector[5]) > 0.95 and a.score > 0.9
    assert learn_direction("age", X[:5], age[:5], min_samples=20) is None
    path = save_directions(tmp_path / "d.npz", {"gender": d, "age": a}, X.std(axis=0))
    loaded, std = load_directions(path, 12)
    assert list(loaded) == ["gender", "age"] and np.allclose(loaded["age"].vector, a.vector)
    assert std.shape == (12,)
    with pytest.raises(ValueError, match=r"expected \(2, 7\)"):
        load_directions(path, 7)
    w, edits = propose_variations(X[0], list(loaded.values()), std, 4, (0.5, 1.0), 0.0, rng)
    steps = [e["step"] for e in edits]
    assert w.shape == (4, 12) and [e["direction"] for e in edits] == ["gender", "age", "gender", "age"]
    assert all(0.5 <= abs(s) <= 1.0 for s in steps)
    # Moving along a direction changes the projection by step * scale, nothing else without perturbation.
    assert float((w[0] - X[0]) @ loaded["gender"].vector) == pytest.approx(steps[0] * loaded["gender"].scale, rel=1e-4)


def test_yaw_proxy_sign():
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)
    turned = frontal.copy()
    turned[2, 0] = 62
    y = yaw_from_landmarks(np.stack([frontal, turned]))
    assert y[0] == pytest.approx(0) and y[1] == pytest.approx(0.3)


def test_string_targets_and_mapping_overrides_replace_them():
    from gandiff.config import compose
    from gandiff.schema import ConfigError

    t = parse_target("gender*age_bin:20-29/30-39", 6, AG)
    assert t == parse_target({"gender": "uniform", "age_bin": {"20-29": 1, "30-39": 1}}, 6, AG)
    assert parse_target("gender", 4, AG).quotas == {("male",): 2, ("female",): 2}
    # The shipped targets are strings, so a mapping on the command line replaces them instead of being
    # merged into them by Hydra (age_bin alone here, no gender left over from the default).
    assert compose(["logger=none"]).identity.target == "gender*age_bin:20-29/30-39"
    cfg = compose(["identity.target={age_bin: {20-29: 1}}", "logger=none"])
    assert dict(cfg.identity.target) == {"age_bin": {"20-29": 1}}
    with pytest.raises(ConfigError, match="identity.target='gender\\*gender': attribute 'gender' appears twice"):
        compose(["identity.target=gender*gender"])
    with pytest.raises(ConfigError, match="unknown age_bin value"):
        compose(["identity.target=age_bin:20-30"])
