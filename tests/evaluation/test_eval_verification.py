"""The insightface 10-fold protocol, .bin reading (and refusing pickles that run code), LFW pairs.txt."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.interpolate import interp1d
from sklearn.model_selection import KFold

from gandiff.evaluation import verification as V


# ------------------------------------------------------------------ a line-by-line re-derivation of insightface


def _ref_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def _ref_roc(thresholds, e1, e2, issame, nfolds):
    dist = np.sum(np.square(e1 - e2), 1)
    tprs = np.zeros((nfolds, len(thresholds)))
    fprs = np.zeros((nfolds, len(thresholds)))
    acc = np.zeros(nfolds)
    for k, (train, test) in enumerate(KFold(n_splits=nfolds, shuffle=False).split(np.arange(len(issame)))):
        acc_train = np.array([_ref_accuracy(t, dist[train], issame[train])[2] for t in thresholds])
        b = np.argmax(acc_train)
        for j, t in enumerate(thresholds):
            tprs[k, j], fprs[k, j], _ = _ref_accuracy(t, dist[test], issame[test])
        acc[k] = _ref_accuracy(thresholds[b], dist[test], issame[test])[2]
    return tprs.mean(0), fprs.mean(0), acc


def _ref_val_far(threshold, dist, issame):
    pred = np.less(dist, threshold)
    return (np.sum(pred & issame) / np.sum(issame), np.sum(pred & ~issame) / np.sum(~issame))


def _old_slinear(x, y, target):
    """SciPy <= 1.8 ``interp1d(x, y, kind='slinear')(target)`` for non-decreasing x with repeats, by hand:
    linear between the last point at or below the target and the next one."""
    j = np.nonzero(x <= target)[0][-1]
    return y[j] + (y[j + 1] - y[j]) * (target - x[j]) / (x[j + 1] - x[j])


def _ref_val(thresholds, e1, e2, issame, far_target, nfolds):
    dist = np.sum(np.square(e1 - e2), 1)
    val, far = np.zeros(nfolds), np.zeros(nfolds)
    for k, (train, test) in enumerate(KFold(n_splits=nfolds, shuffle=False).split(np.arange(len(issame)))):
        far_train = np.array([_ref_val_far(t, dist[train], issame[train])[1] for t in thresholds])
        thr = _old_slinear(far_train, thresholds, far_target) if far_train.max() >= far_target else 0.0
        val[k], far[k] = _ref_val_far(thr, dist[test], issame[test])
    return val.mean(), val.std(), far.mean()


def _pairs(n_pairs=600, dim=16, noise=0.9, seed=0):
    """Interleaved embeddings: same pairs share a centre, different pairs do not."""
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    a = rng.normal(size=(n_pairs, dim))
    b = np.where(issame[:, None], a, rng.normal(size=(n_pairs, dim))) + noise * rng.normal(size=(n_pairs, dim))
    emb = np.empty((2 * n_pairs, dim))
    emb[0::2], emb[1::2] = a, b
    return emb, issame


@pytest.mark.parametrize("n_pairs,noise", [(600, 0.9), (403, 1.4)])
def test_protocol_matches_reference_loops(n_pairs, noise):
    emb, issame = _pairs(n_pairs, noise=noise)
    got = V.evaluate_verification(emb, issame, nfolds=10)
    e = V.l2_normalize(emb)
    tpr, fpr, acc = _ref_roc(np.arange(0, 4, 0.01), e[0::2], e[1::2], issame, 10)
    np.testing.assert_array_equal(got["fold_accuracy"], acc)
    np.testing.assert_allclose(got["tpr"], tpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got["fpr"], fpr, rtol=0, atol=1e-15)
    assert got["accuracy_mean"] == pytest.approx(acc.mean(), abs=1e-15)
    assert got["accuracy_std"] == pytest.approx(acc.std(), abs=1e-15)
    assert 0.6 < got["accuracy_mean"] < 1.0  # the synthetic task is neither trivial nor hopeless
    val, val_std, far = _ref_val(np.arange(0, 4, 0.001), e[0::2], e[1::2], issame, 1e-3, 10)
    assert got["val_mean"] == pytest.approx(val, abs=1e-12)
    assert got["val_std"] == pytest.approx(val_std, abs=1e-12)
    assert got["far_mean"] == pytest.approx(far, abs=1e-12)


def test_val_at_a_loose_far_interpolates():
    emb, issame = _pairs(500, noise=1.2, seed=3)
    got = V.evaluate_verification(emb, issame, nfolds=5, far_target=0.1)
    e = V.l2_normalize(emb)
    val, _, far = _ref_val(np.arange(0, 4, 0.001), e[0::2], e[1::2], issame, 0.1, 5)
    assert got["val_mean"] == pytest.approx(val, abs=1e-12) and got["far_mean"] == pytest.approx(far, abs=1e-12)
    assert 0.02 < got["far_mean"] < 0.2


def test_threshold_at_far_is_scipy_slinear_without_repeats():
    rng = np.random.default_rng(1)
    x = np.sort(rng.random(50))
    y = np.sort(rng.random(50)) * 4
    for t in (x[0], x[7], (x[10] + x[11]) / 2, x[-2]):
        assert V.threshold_at_far(x, y, t) == pytest.approx(float(interp1d(x, y, kind="slinear")(t)), abs=1e-12)
    # with repeats (what FAR curves always have): the last point at or below the target and the next one
    far = np.array([0, 0, 0, 0.002, 0.002, 0.01, 0.5, 1.0])
    thr = np.arange(len(far)) * 0.5
    assert V.threshold_at_far(far, thr, 1e-3) == pytest.approx(_old_slinear(far, thr, 1e-3))
    assert V.threshold_at_far(far, thr, 1e-3) == pytest.approx(1.0 + 0.5 * 0.5)


def test_kfold_matches_sklearn():
    for n, k in ((600, 10), (403, 10), (7, 3)):
        ours = V.kfold_indices(n, k)
        ref = list(KFold(n_splits=k, shuffle=False).split(np.arange(n)))
        for (a, b), (c, d) in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


def test_fuse_flip_sums_raw_then_normalises():
    a = np.array([[3.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 4.0], [0.0, 1.0]])
    np.testing.assert_allclose(V.fuse_flip(a, b), [[0.6, 0.8], [0.0, 1.0]])


def test_embed_images_flip_fuses_mirrored_batches():
    imgs = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    seen = []

    def embed(batch):
        seen.append(batch.copy())
        return batch.reshape(len(batch), -1)[:, :4].astype(np.float64) + 1

    out = V.embed_images(embed, imgs, batch_size=2, flip=True)
    assert out.shape == (5, 4)
    np.testing.assert_array_equal(seen[1], imgs[0:2, :, ::-1])
    raw = imgs.reshape(5, -1)[:, :4] + 1.0 + imgs[:, :, ::-1].reshape(5, -1)[:, :4] + 1.0
    np.testing.assert_allclose(out, V.l2_normalize(raw))


# ------------------------------------------------------------------ .bin files


def _faces(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def test_bin_roundtrip_rgb(tmp_path):
    imgs = _faces(6)
    imgs[0, :, :, :] = (255, 0, 0)  # pure red stays red: RGB order is kept
    V.write_bin(tmp_path / "t.bin", imgs, [True, False, True])
    got, issame = V.load_bin(tmp_path / "t.bin")
    np.testing.assert_array_equal(got, imgs)  # PNG: lossless
    np.testing.assert_array_equal(issame, [True, False, True])
    assert tuple(got[0, 0, 0]) == (255, 0, 0)


def test_bin_python2_layout_and_numpy_flags(tmp_path):
    """Official bins were pickled by Python 2 (str -> bytes under encoding='bytes'); some tools store numpy flags."""
    import cv2

    imgs = _faces(2)
    data = [cv2.imencode(".jpg", im)[1].tobytes() for im in imgs]
    (tmp_path / "np.bin").write_bytes(pickle.dumps((data, np.array([True])), protocol=2))
    bins, issame = V.read_bin(tmp_path / "np.bin")
    assert bins == data and issame.dtype == bool and issame.tolist() == [True]
    # protocol 0 with SHORT_BINSTRING-free text opcodes, as Python 2's default pickler wrote
    (tmp_path / "p0.bin").write_bytes(pickle.dumps((data, [False]), protocol=0))
    bins, issame = V.read_bin(tmp_path / "p0.bin")
    assert bins == data and issame.tolist() == [False]


def test_bin_written_by_python2(tmp_path):
    """The opcodes Python 2's cPickle wrote for ``(list of str, list of bool)``: BINSTRING + NEWTRUE/NEWFALSE."""
    import struct

    import cv2

    imgs = _faces(2, seed=5)
    data = [cv2.imencode(".png", im)[1].tobytes() for im in imgs]
    raw = b"\x80\x02](" + b"".join(b"T" + struct.pack("<i", len(d)) + d for d in data) + b"e]\x88a\x86."
    (tmp_path / "py2.bin").write_bytes(raw)
    got, issame = V.load_bin(tmp_path / "py2.bin")
    assert issame.tolist() == [True]
    np.testing.assert_array_equal(got[:, :, :, ::-1], imgs)  # cv2 encoded BGR: decoded back as RGB


def test_bin_resizes_short_side_like_mxnet(tmp_path):
    import cv2

    big = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", big)
    (tmp_path / "big.bin").write_bytes(pickle.dumps(([buf.tobytes()] * 2, [True])))
    imgs, _ = V.load_bin(tmp_path / "big.bin")
    ref = cv2.cvtColor(cv2.resize(big, (112, 112), interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(imgs[0], ref)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_bin_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([b"x", b"y"], [True], _Evil(str(marker)))))
    (tmp_path / "evil2.bin").write_bytes(pickle.dumps((_Evil(str(marker)), [True])))
    for name in ("evil.bin", "evil2.bin"):
        with pytest.raises(V.UnsafePickleError, match=r"refusing to load (posix|os|nt)\.mkdir"):
            V.load_bin(tmp_path / name)
    assert not marker.exists()  # nothing executed
    # the same file through plain pickle would have run it: the test's payload is real
    pickle.loads((tmp_path / "evil2.bin").read_bytes())
    assert marker.exists()


def test_bin_bad_content_names_the_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(pickle.dumps(([b"x"], [True])))
    with pytest.raises(ValueError, match=r"a\.bin: 1 pairs need 2 images"):
        V.read_bin(tmp_path / "a.bin")
    (tmp_path / "b.bin").write_bytes(pickle.dumps(([b"x", b"y"], ["yes"])))
    with pytest.raises(ValueError, match=r"b\.bin: issame_list must be a list of bools"):
        V.read_bin(tmp_path / "b.bin")
    (tmp_path / "c.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=r"c\.bin: not an insightface verification \.bin"):
        V.read_bin(tmp_path / "c.bin")
    (tmp_path / "d.bin").write_bytes(pickle.dumps(([b"x", b"y"], [True])))
    with pytest.raises(ValueError, match=r"d\.bin\[0\]: the bytes are not a decodable image"):
        V.load_bin(tmp_path / "d.bin")


# ------------------------------------------------------------------ LFW pairs.txt


def test_read_lfw_pairs(tmp_path):
    (tmp_path / "pairs.txt").write_text("2\t1\nAbel_Pacheco\t1\t4\nAbdel_Madi_Shabneh\t1\tDean_Barker\t1\n"
                                        "A_B\t2\t3\nC\t1\tD\t12\n")
    pairs, issame = V.read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert issame.tolist() == [True, False, True, False]
    assert pairs[0] == (tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg",
                        tmp_path / "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg")
    assert pairs[3][1] == tmp_path / "lfw/D/D_0012.jpg"
    (tmp_path / "bad.txt").write_text("10 300\nA 1\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected"):
        V.read_lfw_pairs(tmp_path / "bad.txt", tmp_path)


def test_non_finite_embeddings_are_refused_naming_the_image():
    from gandiff.errors import UserError
    from gandiff.evaluation.verification import embed_images, evaluate_verification

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    emb[5, 0] = np.nan
    with pytest.raises(UserError, match=r"^pair 2 image 1: embedding has non-finite values"):
        evaluate_verification(emb, np.arange(20) % 2 == 0)
    images = np.zeros((4, 8, 8, 3), np.uint8)
    images[3] = 7

    def embed(batch):
        e = batch.reshape(len(batch), -1)[:, :4].astype(np.float32) + 1
        e[batch[:, 0, 0, 0] == 7] = np.nan
        return e

    with pytest.raises(UserError, match=r"^lfw\.bin image 3: embedding"):
        embed_images(embed, images, batch_size=3, flip=False, names=[f"lfw.bin image {i}" for i in range(4)])
    with pytest.raises(UserError, match=r"^image 3: embedding"):
        embed_images(embed, images, batch_size=3, flip=False)


def test_bin_with_a_numpy_path_to_object_pointers_is_refused(tmp_path):
    """issame as an array whose '|V1' dtype's pickled state marks it as holding objects: refused."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct

    class Reduces:
        def __init__(self, fn, args, state):
            self.fn, self.args, self.state = fn, args, state

        def __reduce__(self):
            return self.fn, self.args, self.state

    flagged = Reduces(np.dtype, ("V1", False, True), (3, "|", None, None, None, 1, 1, 0x01))
    issame = Reduces(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), flagged, False, b"\0"))
    p = tmp_path / "evil.bin"
    p.write_bytes(pickle.dumps(([b"a", b"b"], issame), protocol=4))
    with pytest.raises(V.UnsafePickleError, match=r"evil\.bin: NumPy dtype .* holds Python objects"):
        V.read_bin(p)
