"""Leakage audit: the FMR threshold against sklearn; real faces (t1.jpg) flagged in a synthetic set."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.curation.leakage import Gallery, load_gallery_npz, save_gallery_npz, threshold_at_fmr


def test_threshold_matches_sklearn_roc(tmp_path):
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((120, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.repeat(np.arange(40), 3).astype(str)
    g = Gallery(emb, ids)
    save_gallery_npz(tmp_path / "g.npz", g)
    g = load_gallery_npz(tmp_path / "g.npz")
    iu = np.triu_indices(len(emb), 1)
    scores = (emb @ emb.T)[iu]
    mated = (ids[:, None] == ids[None, :])[iu]
    nonmated = scores[~mated]
    for fmr in (1e-3, 1e-2, 0.1):
        t = threshold_at_fmr(g, fmr)
        assert t["nonmated_pairs"] == nonmated.size and t["resolvable"]
        assert (nonmated >= t["threshold"]).mean() <= fmr  # at most fmr of non-mated pairs match
        fpr, _, thr = roc_curve(mated, scores, drop_intermediate=False)
        ok = fpr <= fmr
        best = thr[ok].min()  # sklearn's lowest score threshold with FPR <= fmr
        assert t["threshold"] <= best + 1e-6
        assert (nonmated >= t["threshold"]).mean() == pytest.approx(fpr[ok][thr[ok].argmin()])
        below = nonmated[nonmated < t["threshold"]].max()  # any lower threshold breaks the FMR
        assert (nonmated >= below).mean() > fmr


def test_real_faces_are_flagged_in_a_synthetic_set(curated_root, fake_upstream, tmp_path):
    """Identities 0-5 are t1.jpg's people (leaked by construction); 6-8 are other real photos not in the gallery."""
    import json
    import shutil

    from gandiff.config import package_file
    from gandiff.pipeline import run_stage

    from .conftest import compose_at

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    shutil.copy(package_file("insightface/data/images/t1.jpg"), gallery / "t1.jpg")
    cfg = compose_at(curated_root, f"curation.leakage_gallery={gallery}", "curation.drop_leaked=true")
    res = run_stage(cfg, "export")
    rep = json.loads((__import__("pathlib").Path(res["dir"]) / "leakage.json").read_text())
    assert rep["gallery_faces"] == 6 and not rep["resolvable"]  # 15 non-mated pairs cannot resolve 1e-4
    assert sorted(rep["flagged"]) == [f"id_{i:06d}" for i in range(6)]
    assert res["identities"] == 3 and res["tag"].endswith("leak-drop")
    card = (__import__("pathlib").Path(res["dir"]) / "README.md").read_text()
    assert "Flagged:" in card and "(dropped)" in card
