"""Dataset measures against independent computations (definitions, brute-force loops, recorded outputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from gandiff.evaluation import measures as M


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_vendi_matches_recorded_vendi_score_package():
    # Recorded with vendi-score 0.0.3 (PyPI), vendi_score.vendi.score_X(X) (cosine kernel, q=1), run in a
    # scratch folder on exactly these inputs: rng = np.random.default_rng(19), then (7, 5), (4, 16), (12, 3).
    rng = np.random.default_rng(19)
    recorded = {(7, 5): 3.5785627116201186, (4, 16): 3.8679638665446405, (12, 3): 2.8705166212416593}
    for (n, d), want in recorded.items():
        x = rng.standard_normal((n, d))
        assert M.vendi_score(x) == pytest.approx(want, rel=1e-9)


def test_vendi_is_exp_entropy_of_eigenvalues_of_k_over_n():
    rng = np.random.default_rng(3)
    for n, d in ((9, 4), (3, 8), (20, 20)):
        x = rng.standard_normal((n, d))
        u = _unit(x)
        lam = scipy.linalg.eigvalsh(u @ u.T / n)  # the definition, on the n x n kernel
        lam = lam[lam > 1e-15]
        assert M.vendi_score(x) == pytest.approx(math.exp(-sum(v * math.log(v) for v in lam)), rel=1e-8)


def test_vendi_limits():
    e = np.eye(6)
    assert M.vendi_score(e) == pytest.approx(6.0)  # orthogonal images: n distinct
    assert M.vendi_score(np.ones((5, 3))) == pytest.approx(1.0)  # identical images: one
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    emb = np.vstack([np.ones((2, 6)), np.eye(6)])
    per = M.vendi_per_identity(emb, labels)
    assert per[0] == pytest.approx(1.0) and per[1] == pytest.approx(6.0)


def test_vec2face_separability_equals_brute_force_and_reference_expression():
    rng = np.random.default_rng(0)
    # Centres with some close pairs so that the 0.4 threshold bites.
    base = rng.standard_normal((40, 8))
    centres = np.vstack([base, base[:15] + 0.6 * rng.standard_normal((15, 8))])
    got = M.vec2face_separable(centres, 0.4, block=7)  # a block size that does not divide C
    u = _unit(centres)
    sim = u @ u.T
    brute = np.array([not any(sim[i, j] > 0.4 for i in range(j)) for j in range(len(u))])
    assert np.array_equal(got, brute)
    # HaiyuWu/Vec2Face inter-separability-measurement.py get_similarity(): np.triu(sim > 0.40, k=1).sum(0) == 0
    assert int(got.sum()) == int((np.triu(sim > 0.40, k=1).sum(axis=0) == 0).sum())
    assert 0 < got.sum() < len(u)


def test_nearest_other_identity_brute_force():
    rng = np.random.default_rng(1)
    c = rng.standard_normal((13, 5))
    got = M.nearest_other_identity(c, block=4)
    u = _unit(c)
    want = [max(float(u[i] @ u[j]) for j in range(len(u)) if j != i) for i in range(len(u))]
    assert np.allclose(got, want)
    assert np.isnan(M.nearest_other_identity(c[:1])).all()


def test_identity_centres_are_means():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    labels = np.array([5, 5, 2])
    ids, centres = M.identity_centres(emb, labels)
    assert ids.tolist() == [2, 5]
    assert np.allclose(centres, [[3.0, 3.0], [0.5, 0.5]])


def test_pose_and_label_spread_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    poses = np.array([[10, 0, 0], [20, 0, 0], [30, 6, 0], [np.nan, np.nan, np.nan], [5, 5, 5], [1, 1, 1]], float)
    spread = M.pose_spread(poses, labels)
    assert set(spread) == {0}  # identity 1 has one pose left, identity 2 one image
    assert spread[0][0] == pytest.approx(math.sqrt(((10 - 20) ** 2 + 0 + (30 - 20) ** 2) / 3))
    assert spread[0][1] == pytest.approx(math.sqrt((4 + 4 + 16) / 3))
    ls = M.label_spread(["male", "male", "female", "x", None, "y"], labels)
    p = np.array([2 / 3, 1 / 3])
    assert ls[0][0] == pytest.approx(float(-(p * np.log(p)).sum()))
    assert ls[0][1] == pytest.approx(1 / 3)
    assert 1 not in ls and 2 not in ls


def test_mated_scores_per_identity_brute_force():
    rng = np.random.default_rng(2)
    emb = _unit(rng.standard_normal((7, 4)))
    labels = np.array([0, 1, 0, 1, 0, 2, 1])
    got = M.mated_scores_per_identity(emb, labels)
    for lab in (0, 1):
        idx = np.flatnonzero(labels == lab)
        want = sorted(float(emb[a] @ emb[b]) for k, a in enumerate(idx) for b in idx[k + 1:])
        assert np.allclose(sorted(got[lab]), want)
    assert 2 not in got


def test_dataset_measures_summary_and_bad_input():
    rng = np.random.default_rng(4)
    emb = _unit(rng.standard_normal((12, 6)))
    labels = np.repeat([0, 1, 2], 4)
    meta = [{"yaw": float(i), "pitch": 0.0, "roll": 0.0, "gender": "male" if i % 3 else "female"} for i in range(12)]
    out = M.dataset_measures(emb, labels, meta)
    assert out["identities"] == 3 and out["images"] == 12
    assert out["vendi"]["count"] == 3
    assert out["separability"]["identities"] == 3
    assert out["pose"]["yaw_std"]["mean"] == pytest.approx(np.std([0, 1, 2, 3]))
    assert out["attributes"]["gender"]["identities"] == 3
    assert M.dataset_measures(emb, labels)["pose"] is None
    with pytest.raises(ValueError, match="metadata rows"):
        M.dataset_measures(emb, labels, meta[:3])
