"""curate + export through the real pipeline on fake upstream folders with real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import compose_at
from gandiff.artifacts import read_table
from gandiff.pipeline import StageError, run_stage, stage_dir


def test_scores_table_counts_bad_input(curated_root, fake_upstream):
    cfg = compose_at(curated_root)
    d = stage_dir(cfg, "curate")
    rows = read_table(d / "scores.parquet")
    rec = json.loads((d / "stage.json").read_text())["counts"]
    assert rec["unreadable"] == 1 and rec["identities_without_face"] == 1
    assert {r["status"] for r in rows if r["id"] == "id_000009"} == {"no_face"}
    emb = np.load(d / "embeddings.npy")
    ok = [r for r in rows if r["status"] == "ok"]
    assert emb.shape == (len(rows), 128)
    assert np.allclose(np.linalg.norm(emb[[r["embedding_row"] for r in ok]], axis=1), 1, atol=1e-3)
    assert min(r["anchor_sim"] for r in ok) > 0.5  # augmented portraits keep their identity
    assert all(r["other_id"] != r["id"] for r in ok)
    from PIL import Image

    assert Image.open(d / ok[0]["crop"]).size == (112, 112)
    assert run_stage(cfg, "curate")["status"] == "up-to-date"


def test_reselection_runs_no_model_and_gets_its_own_folder(curated_root, fake_upstream, monkeypatch):
    import hydra.utils

    def no_models(*a, **k):
        raise AssertionError("selection must not build a model")

    monkeypatch.setattr(hydra.utils, "instantiate", no_models)
    a = run_stage(compose_at(curated_root, "curation.min_anchor_similarity=0.3"), "export")
    b = run_stage(compose_at(curated_root, "curation.min_anchor_similarity=0.95"), "export")
    assert a["dir"] != b["dir"] and b["images"] < a["images"]
    assert "anchor0.95" in Path(b["dir"], "tag.txt").read_text()
    sel = read_table(Path(b["dir"]) / "selection.parquet")
    assert {r["reason"] for r in sel if not r["selected"]} >= {"anchor_similarity", "unreadable", "no_face"}


def test_export_formats_agree_image_for_image(curated_root, fake_upstream, tmp_path):
    from gandiff.datasets.readers import open_dataset

    res = run_stage(compose_at(curated_root), "export")
    d = Path(res["dir"])
    sets = {f: open_dataset(d, format=f) for f in ("recordio", "imagefolder", "webdataset")}
    n = res["images"]
    assert n > 0 and all(len(s) == n for s in sets.values())
    for i in range(n):
        ref = sets["imagefolder"].read_bytes(i)
        assert sets["recordio"].read_bytes(i) == ref and sets["webdataset"].read_bytes(i) == ref
    assert sets["recordio"].identities == sets["imagefolder"].identities
    assert (d / "recordio" / "property").read_text() == f"{res['identities']},112,112\n"


def test_empty_selection_is_an_empty_dataset_with_a_card(curated_root, fake_upstream):
    from gandiff.datasets.readers import EmptyDatasetError, open_dataset

    res = run_stage(compose_at(curated_root, "curation.min_det_score=1.0"), "export")
    assert res["status"] == "done" and res["empty"] and res["images"] == 0
    d = Path(res["dir"])
    assert not (d / "recordio").exists()
    assert "This dataset is empty" in (d / "README.md").read_text()
    with pytest.raises(EmptyDatasetError, match="det_score"):
        open_dataset(d)


def test_publish_dir_refuses_a_folder_made_under_other_settings(curated_root, fake_upstream, tmp_path):
    pub = tmp_path / "published"
    run_stage(compose_at(curated_root, f"export.publish_dir={pub}"), "export")
    assert (pub / "recordio" / "train.rec").exists() and (pub / "README.md").exists()
    with pytest.raises(StageError, match="holds another dataset"):
        run_stage(compose_at(curated_root, f"export.publish_dir={pub}", "curation.max_images=2"), "export")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StageError, match="not made by gandiff"):
        run_stage(compose_at(curated_root, f"export.publish_dir={other}"), "export")
