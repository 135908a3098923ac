"""IJB-B/C 1:1: meta files, template aggregation, scoring and TAR@FAR against insightface's own loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from gandiff.evaluation import ijb


def _ref_template_features(img_feats, templates, medias):
    """insightface image2template_feature, line by line."""
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for c, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        template_feats[c] = np.sum(np.array(media_norm_feats), axis=0)
    return template_feats / np.linalg.norm(template_feats, axis=1, keepdims=True), unique_templates


def _ref_tar(label, score, x_labels):
    fpr, tpr, _ = roc_curve(label, score)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out = []
    for x in x_labels:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        out.append(tpr[min_index])
    return out


def test_template_features_match_insightface_loop():
    rng = np.random.default_rng(0)
    n = 60
    feats = rng.normal(size=(n, 8)) * rng.uniform(0.5, 2, size=(n, 1))
    templates = rng.choice([3, 7, 11, 40, 41], size=n)
    medias = rng.integers(100, 104, size=n)
    det = rng.uniform(0.5, 1.0, size=n)
    got, ids = ijb.template_features(feats, templates, medias, det)
    ref, ref_ids = _ref_template_features(feats * det[:, None], templates, medias)
    np.testing.assert_array_equal(ids, ref_ids)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)


def test_score_pairs_blocked_equals_direct():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(50, 16)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    ids = np.sort(rng.choice(1000, size=50, replace=False))
    t1, t2 = rng.choice(ids, 3000), rng.choice(ids, 3000)
    got = ijb.score_pairs(f, ids, t1, t2, block=7)
    ref = np.sum(f[np.searchsorted(ids, t1)] * f[np.searchsorted(ids, t2)], axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError, match="t2=5000 has no images"):
        ijb.score_pairs(f, ids, t1[:3], np.array([ids[0], ids[1], 5000]))


@pytest.mark.parametrize("ties", [False, True])
def test_tar_at_far_matches_insightface_table(ties):
    rng = np.random.default_rng(2)
    label = (rng.random(200_000) < 0.01).astype(np.int8)
    score = np.where(label == 1, rng.normal(0.6, 0.15, len(label)), rng.normal(0.0, 0.12, len(label)))
    if ties:
        score = np.round(score, 3)
    got = ijb.tar_at_far(label, score)
    ref = _ref_tar(label, score, ijb.FAR_TARGETS)
    assert list(got.values()) == pytest.approx(ref, abs=1e-12)
    fpr, tpr, thr = ijb.roc_curve_dropped(label, score)
    sk = roc_curve(label, score)
    np.testing.assert_allclose(fpr, sk[0])
    np.testing.assert_allclose(tpr, sk[1])
    np.testing.assert_allclose(thr[1:], sk[2][1:])


def _write_ijb(root, target="ijbc"):
    """Three subjects, colour-coded, 2 templates each; frames of one video share a media id."""
    import cv2

    from gandiff.face.align import ARCFACE_TEMPLATE

    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    colours = {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200)}
    rows, lm_rows = [], []
    tid = 1
    n = 0
    for subject, colour in colours.items():
        for _ in range(2):
            for media in (1, 2):
                name = f"{n}.jpg"
                img = np.zeros((150, 140, 3), np.uint8)
                img[:] = colour
                cv2.imwrite(str(root / "loose_crop" / name), img[:, :, ::-1].copy())
                lm = ARCFACE_TEMPLATE + np.array([10.0, 20.0], np.float32)  # a shifted, unscaled face
                rows.append(f"{name} {tid} {100 * tid + media}")
                lm_rows.append(" ".join([name, *(f"{v:.3f}" for v in lm.reshape(-1)), "0.9"]))
                n += 1
            tid += 1
    (root / "meta" / f"{target}_face_tid_mid.txt").write_text("\n".join(rows) + "\n")
    (root / "meta" / f"{target}_name_5pts_score.txt").write_text("\n".join(lm_rows) + "\n")
    pairs = [(a, b, int((a - 1) // 2 == (b - 1) // 2)) for a in range(1, 7) for b in range(a + 1, 7)]
    (root / "meta" / f"{target}_template_pair_label.txt").write_text("".join(f"{a} {b} {l}\n" for a, b, l in pairs))
    return pairs


def test_evaluate_ijb_end_to_end(tmp_path):
    pairs = _write_ijb(tmp_path)
    seen = []

    def embed_raw(crops):  # mean colour of the aligned crop's centre: RGB order matters
        seen.append(crops.shape)
        return crops[:, 40:70, 40:70].reshape(len(crops), -1, 3).mean(1).astype(np.float32) - 100.0

    res = ijb.evaluate_ijb(tmp_path, "IJBC", embed_raw, batch_size=5)
    assert res.num_templates == 6 and res.num_images == 12 and len(res.scores) == len(pairs)
    same = res.labels == 1
    assert np.all(res.scores[same] > 0.99) and np.all(res.scores[~same] < 0.5)
    assert res.tar["tar@far=0.1"] == 1.0
    assert seen[0] == (5, 112, 112, 3)


def test_meta_file_errors_name_the_file(tmp_path):
    (tmp_path / "p.txt").write_text("1 2 1\n3 4\n")
    with pytest.raises(ValueError, match=r"p\.txt"):
        ijb.read_template_pairs(tmp_path / "p.txt")
    (tmp_path / "q.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"q\.txt:1: label 3: labels must be 0 or 1"):
        ijb.read_template_pairs(tmp_path / "q.txt")
    with pytest.raises(FileNotFoundError, match="IJB meta file not found"):
        ijb.read_landmarks(tmp_path / "none.txt")
    with pytest.raises(ValueError, match="must be IJBB or IJBC"):
        ijb.evaluate_ijb(tmp_path, "IJBA", lambda x: x)


def test_scores_are_float64_and_resolve_a_float32_tie():
    """Template 2 is 2e-9 closer to template 1 than template 3 is: equal in float32, ordered in float64
    (insightface's eval_ijbc.py scores float64 template features in float64)."""
    c = 0.5 + 2e-9
    feats = np.array([[1.0, 0.0], [c, np.sqrt(1 - c * c)], [0.5, np.sqrt(0.75)]])  # (3 images, D=2)
    tf, ids = ijb.template_features(feats, np.array([1, 2, 3]), np.array([10, 20, 30]))
    label = np.array([1, 0], np.int8)
    scores = ijb.score_pairs(tf, ids, np.array([1, 1]), np.array([2, 3]))
    assert scores.dtype == np.float64
    ref = [feats[0] @ feats[1] / np.linalg.norm(feats[1]), feats[0] @ feats[2] / np.linalg.norm(feats[2])]
    np.testing.assert_allclose(scores, ref, rtol=0, atol=1e-15)
    assert np.float32(scores[0]) == np.float32(scores[1]) and scores[0] > scores[1]  # the tie float32 made
    tar = ijb.tar_at_far(label, scores, fars=(1e-6,))
    assert tar["tar@far=1e-06"] == _ref_tar(label, scores, (1e-6,))[0] == 1.0
    assert _ref_tar(label, scores.astype(np.float32), (1e-6,))[0] == 0.0  # what float32 scores reported


def test_non_finite_embedding_is_refused_naming_the_image(tmp_path):
    from gandiff.errors import UserError

    _write_ijb(tmp_path)

    def embed_raw(crops):  # the green subject's faces (images 4..7) come out NaN
        f = crops[:, 40:70, 40:70].reshape(len(crops), -1, 3).mean(1).astype(np.float32) - 100.0
        f[f[:, 1] > 50] = np.nan
        return f

    with pytest.raises(UserError, match=rf"^{tmp_path / 'loose_crop' / '4.jpg'}: embedding has non-finite "
                                        r"values \(NaN or inf; 1 of 5 rows\)"):
        ijb.evaluate_ijb(tmp_path, "IJBC", embed_raw, batch_size=5)
    feats = np.ones((3, 4))
    feats[2, 1] = np.inf
    with pytest.raises(UserError, match="row 2 of the embeddings"):
        ijb.template_features(feats, np.array([1, 1, 2]), np.array([1, 1, 2]))


def test_short_tid_mid_line_names_its_line(tmp_path):
    p = tmp_path / "ijbc_face_tid_mid.txt"
    p.write_text("1.jpg 1 10\n2.jpg 1 10\n3.jpg 2\n4.jpg 3 30\n")
    with pytest.raises(ijb.IJBError, match=rf"^{p}:3: 2 fields, expected 3 \('image_name template_id media_id'\)"):
        ijb.read_template_media(p)
    p.write_text("1.jpg 1 10\n2.jpg one 10\n")
    with pytest.raises(ijb.IJBError, match=rf"^{p}:2: 'one' is not a number"):
        ijb.read_template_media(p)
