"""Score distributions: blocked pairs vs brute force, error rates vs scikit-learn, distances vs SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, ks_2samp, wasserstein_distance
from sklearn.metrics import roc_curve

from gandiff.evaluation import distributions as D


def _embeddings(n_ids=7, per=(1, 6), dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    counts = rng.integers(per[0], per[1] + 1, size=n_ids)
    labels = np.repeat(np.arange(n_ids), counts)
    rng.shuffle(labels)
    e = centres[labels] + 0.8 * rng.normal(size=(len(labels), dim))
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32), labels


def _brute(e, y):
    m, nm = [], []
    for i in range(len(y)):
        for j in range(i + 1, len(y)):
            (m if y[i] == y[j] else nm).append(float(e[i] @ e[j]))
    return np.sort(m), np.sort(nm)


@pytest.mark.parametrize("block", [3, 5, 64])
def test_blocked_pairs_equal_brute_force(block):
    e, y = _embeddings()
    m, nm = D.all_pair_scores(e, y, block=block)
    bm, bnm = _brute(e, y)
    np.testing.assert_allclose(np.sort(m), bm, atol=1e-6)
    np.testing.assert_allclose(np.sort(nm), bnm, atol=1e-6)
    assert (len(m), len(nm)) == D.count_pairs(y)
    np.testing.assert_allclose(np.sort(D.mated_pair_scores(e, y)), bm, atol=1e-6)


def _whole_tiles(e, y, block):
    """The tiles of the upper triangle computed whole, in tile order, row-major within a tile."""
    m, nm = [], []
    for i0 in range(0, len(y), block):
        for j0 in range(i0, len(y), block):
            s = e[i0:i0 + block] @ e[j0:j0 + block].T
            same = y[i0:i0 + block, None] == y[None, j0:j0 + block]
            keep = np.triu(np.ones(s.shape, bool), k=1) if i0 == j0 else np.ones(s.shape, bool)
            m.append(s[keep & same])
            nm.append(s[keep & ~same])
    return np.concatenate(m), np.concatenate(nm)


DEFAULT_STRIP = D._STRIP_ELEMENTS


@pytest.mark.parametrize("strip_elements", [1, 7, 40, DEFAULT_STRIP])
def test_pair_strips_keep_the_tile_order(strip_elements, monkeypatch):
    """Strips of rows (and the lower triangle skipped in diagonal tiles) give the whole tiles' scores in the
    same order, whatever the strip height; the per-tile iterator agrees with the in-place writer."""
    e, y = _embeddings(n_ids=9, per=(1, 9), dim=16, seed=2)
    monkeypatch.setattr(D, "_STRIP_ELEMENTS", strip_elements)
    for block in (4, 11, 1000):
        wm, wnm = _whole_tiles(e, y, block)
        m, nm = D.all_pair_scores(e, y, block=block)
        assert m.dtype == nm.dtype == np.float32 and (len(m), len(nm)) == (len(wm), len(wnm))
        # Unsorted: the order is part of the result. Strips of a few rows may take another BLAS kernel (last-bit
        # differences); strips of the default height give the whole tile's bits.
        check = np.testing.assert_array_equal if strip_elements == DEFAULT_STRIP else (
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6))
        check(m, wm)
        check(nm, wnm)
        tiles = list(D.iter_pair_blocks(e, y, block))
        n_tiles = sum(len(range(i0, len(y), block)) for i0 in range(0, len(y), block))
        assert len(tiles) == n_tiles
        np.testing.assert_array_equal(np.concatenate([t[0] for t in tiles]), m)
        np.testing.assert_array_equal(np.concatenate([t[1] for t in tiles]), nm)


def test_all_pair_scores_edge_sizes():
    e, y = _embeddings(n_ids=3, per=(1, 2), dim=4)
    for n in (0, 1, 2):
        m, nm = D.all_pair_scores(e[:n], y[:n], block=2)
        assert (len(m), len(nm)) == D.count_pairs(y[:n]) and m.dtype == nm.dtype == np.float32
    with pytest.raises(ValueError, match="block=0"):
        D.all_pair_scores(e, y, block=0)
    with pytest.raises(ValueError, match="labels"):
        D.all_pair_scores(e, y[:-1])


def test_pair_scores_samples_with_a_stated_count():
    e, y = _embeddings(n_ids=20, per=(3, 8), seed=1)
    n_m, n_nm = D.count_pairs(y)
    ps = D.pair_scores(e, y, max_pairs=n_m + 1, seed=0)  # mated exhaustive, non-mated sampled
    assert not ps.mated_sampled and ps.nonmated_sampled and len(ps.nonmated) == n_m + 1
    assert ps.nonmated_total == n_nm and ps.describe()["nonmated_pairs"] == n_m + 1
    i, j = D.sample_nonmated_pairs(y, 500, np.random.default_rng(0))
    assert np.all(y[i] != y[j])
    i, j = D.sample_mated_pairs(y, 500, np.random.default_rng(0))
    assert np.all(y[i] == y[j]) and np.all(i != j)
    # sampled scores come from the same distribution as the exhaustive ones
    _, all_nm = D.all_pair_scores(e, y)
    big = D.pair_scores(e, y, max_pairs=20000, seed=3)
    assert big.nonmated_sampled is False or abs(big.nonmated.mean() - all_nm.mean()) < 0.01


def test_mated_sampling_is_uniform_over_pairs():
    y = np.array([0] * 10 + [1] * 2)  # 45 mated pairs of id 0, 1 of id 1
    i, _ = D.sample_mated_pairs(y, 46000, np.random.default_rng(0))
    assert abs(np.mean(y[i] == 1) - 1 / 46) < 0.003


def _scores(seed=0, n_m=300, n_nm=3000, ties=False):
    rng = np.random.default_rng(seed)
    m, nm = rng.normal(0.5, 0.15, n_m), rng.normal(0.05, 0.1, n_nm)
    if ties:
        m, nm = np.round(m, 2), np.round(nm, 2)
    return m, nm


@pytest.mark.parametrize("ties", [False, True])
def test_roc_equals_sklearn(ties):
    m, nm = _scores(ties=ties)
    fmr, tmr, thr = D.roc(m, nm)
    y = np.r_[np.ones(len(m)), np.zeros(len(nm))]
    fpr, tpr, sk_thr = roc_curve(y, np.r_[m, nm], drop_intermediate=False)
    np.testing.assert_allclose(fmr, fpr)
    np.testing.assert_allclose(tmr, tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


@pytest.mark.parametrize("ties", [False, True])
def test_eer_and_fnmr_at_fmr_against_sklearn(ties):
    m, nm = _scores(seed=2, ties=ties)
    y = np.r_[np.ones(len(m)), np.zeros(len(nm))]
    fpr, tpr, _ = roc_curve(y, np.r_[m, nm])
    ref_eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert D.eer(m, nm)[0] == pytest.approx(ref_eer, abs=1e-6)
    for target in (1e-1, 1e-2, 1e-3):
        ref = 1.0 - tpr[fpr <= target].max()
        assert D.fnmr_at_fmr(m, nm, target)[0] == pytest.approx(ref, abs=1e-12)
        assert D.tar_at_far(m, nm, target) == pytest.approx(1 - ref, abs=1e-12)


def test_eer_hand_computed():
    # mated {0.9, 0.6, 0.4}, non-mated {0.5, 0.3, 0.1}: at t=0.5 FMR=1/3, FNMR=1/3
    assert D.eer([0.9, 0.6, 0.4], [0.5, 0.3, 0.1])[0] == pytest.approx(1 / 3)
    assert D.eer([0.9, 0.8], [0.1, 0.2])[0] == 0.0


def test_summary_and_d_prime():
    m, nm = _scores(seed=4)
    s = D.distribution_summary(m, nm)
    assert s["d_prime"] == pytest.approx(abs(m.mean() - nm.mean()) / np.sqrt((m.var() + nm.var()) / 2))
    assert s["fnmr@fmr=0.01"] is not None and s["fnmr@fmr=0.0001"] is None  # 3000 non-mated < 1e4
    assert s["mated_std"] == pytest.approx(m.std())
    empty = D.distribution_summary(m, [])
    assert empty["eer"] is None and empty["mated_pairs"] == 300


def test_histogram_distances_against_scipy():
    rng = np.random.default_rng(5)
    p, q = rng.integers(0, 50, 40), rng.integers(1, 50, 40)
    p[3] = 0
    assert D.kl_divergence(p, q, eps=0) == pytest.approx(entropy(p, q), rel=1e-9)
    assert D.js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-9)
    edges = np.linspace(-1, 1, 41)
    c = (edges[:-1] + edges[1:]) / 2
    assert D.wasserstein_hist(p, q, edges) == pytest.approx(wasserstein_distance(c, c, p, q), rel=1e-9)
    # samples sitting on the bin centres: histogram KS is the sample KS
    u, v = np.repeat(c, p), np.repeat(c, q)
    assert D.ks_hist(p, q) == pytest.approx(ks_2samp(u, v).statistic, rel=1e-9)
    assert D.overlap(p, p) == pytest.approx(1.0) and D.js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert D.overlap([1, 0], [0, 1]) == 0.0 and D.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)


def test_sample_distances_against_scipy():
    rng = np.random.default_rng(6)
    u, v = rng.normal(0, 1, 500), rng.normal(0.3, 1.2, 700)
    assert D.wasserstein_samples(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-9)
    assert D.ks_samples(u, v) == pytest.approx(ks_2samp(u, v).statistic, rel=1e-12)
    r = np.round(u, 1), np.round(v, 1)  # ties
    assert D.ks_samples(*r) == pytest.approx(ks_2samp(*r).statistic, rel=1e-12)
    assert D.wasserstein_samples(*r) == pytest.approx(wasserstein_distance(*r), rel=1e-9)


def test_histogram_file_roundtrip_and_reference_comparison(tmp_path):
    m, nm = _scores(seed=7)
    h = D.ScoreHistogram.from_scores(m, nm, bins=50, metadata={"embedder": "sface", "dataset": "x"})
    assert h.mated.sum() == len(m) and h.nonmated.sum() == len(nm)
    h.save(tmp_path / "ref.json")
    back = D.ScoreHistogram.load(tmp_path / "ref.json")
    np.testing.assert_array_equal(back.mated, h.mated)
    assert back.metadata["embedder"] == "sface" and back.stats["eer"] == pytest.approx(h.stats["eer"])
    same = D.compare_to_reference(m, nm, back)
    assert same["mated"]["overlap"] == pytest.approx(1.0) and same["nonmated"]["js"] == pytest.approx(0.0, abs=1e-12)
    shifted = D.compare_to_reference(m - 0.2, nm, back)
    assert shifted["mated"]["wasserstein"] == pytest.approx(0.2, abs=0.02)
    (tmp_path / "bad.json").write_text('{"format": "gandiff-score-histogram", "edges": [0, 1], "mated": [1, 2], '
                                       '"nonmated": [1]}')
    with pytest.raises(ValueError, match=r"bad\.json: mated must be 1 non-negative counts"):
        D.ScoreHistogram.load(tmp_path / "bad.json")


def test_reference_cli_on_an_export(tmp_path, builders, capsys):
    export = builders.export(tmp_path / "export", n_ids=4, per_id=3)
    D.main([str(export), "--out", str(tmp_path / "ref.json"), "--bins", "50", "--device", "cpu"])
    h = D.ScoreHistogram.load(tmp_path / "ref.json")
    assert h.mated.sum() == 4 * 3 and h.nonmated.sum() == 66 - 12 and h.metadata["embedder"] == "sface"
    assert h.metadata["num_identities"] == 4 and "ref.json: 12 mated" in capsys.readouterr().out


def test_non_finite_embeddings_are_refused_naming_the_image():
    from gandiff.datasets.sample import Sample
    from gandiff.errors import UserError
    from gandiff.evaluation.distributions import embed_dataset, pair_scores, roc

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4))
    emb[3, 2] = np.nan
    with pytest.raises(UserError, match=r"^row 3 of the embeddings: embedding has non-finite values"):
        pair_scores(emb, np.array([0, 0, 1, 1, 2, 2]))

    class Faces:  # the reader interface embed_dataset uses
        path = "/data/faces.rec"
        labels = np.array([0, 0, 1, 1])

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Sample(image=np.full((4, 4, 3), i, np.uint8), label=int(self.labels[i]), identity=str(i))

    def embed(batch):  # image 2 gives inf
        e = batch.reshape(len(batch), -1)[:, :3].astype(np.float32) + 1
        e[batch[:, 0, 0, 0] == 2] = np.inf
        return e

    with pytest.raises(UserError, match=r"^/data/faces.rec image 2: embedding has non-finite values"):
        embed_dataset(Faces(), embed, batch_size=3)
    with pytest.raises(UserError, match="1 mated scores are NaN or inf"):
        roc(np.array([0.5, np.nan]), np.array([0.1]))
