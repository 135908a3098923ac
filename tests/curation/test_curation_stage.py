"""curate + export through the real pipeline on fake upstream folders with real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gandiff.artifacts import read_table
from gandiff.pipeline import StageError, run_stage, stage_dir

from .conftest import compose_at


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
    # each image's prompt-family options, from the generate manifest (selection spreads over them)
    gen = {r["image_id"]: r for r in read_table(stage_dir(cfg, "generate") / "images.parquet")}
    assert {r["fam_lighting"] for r in ok} == {"in dim light", "in bright sunlight", ""}  # a family of the bank
    assert all(r["fam_lighting"] == gen[r["image_id"]]["choice_lighting"] for r in ok)
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


def test_attributes_come_from_the_image_and_its_landmarks(curated_root, fake_upstream):
    """curate feeds the age-gender models the generated image and the face's landmarks (the dlib-chip input
    they were trained on), not the ArcFace crop: same values as classify(image, landmarks), and right on the
    real people behind identities 6-8 (Eileen Collins, Grace Hopper at 78, Tom Hanks)."""
    from hydra.utils import instantiate

    from gandiff.face.images import read_image

    cfg = compose_at(curated_root)
    rows = [r for r in read_table(stage_dir(cfg, "curate") / "scores.parquet") if r["status"] == "ok"]
    clf = instantiate(cfg.attributes.classifier)
    gen = stage_dir(cfg, "generate")
    for r in rows[::5]:
        lm = np.asarray(r["landmarks"], np.float32).reshape(5, 2)
        img = read_image(gen / r["path"])
        direct = clf.classify(img, [lm])[0]
        assert r["gender"] == direct.gender and r["age"] == pytest.approx(direct.age, abs=0.5)
        crop_age = clf.classify_aligned(read_image(stage_dir(cfg, "curate") / r["crop"])[None])[0].age
        assert abs(crop_age - direct.age) > 1e-3  # the crop path is a different input (black chip borders)
    by_id = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    assert {r["gender"] for r in by_id["id_000006"]} == {"female"}  # astronaut Eileen Collins
    # Grace Hopper, photographed at 78 (the gender model calls her male in uniform, with either input)
    assert min(r["age"] for r in by_id["id_000007"]) > 70
    assert {r["gender"] for r in by_id["id_000008"]} == {"male"}  # Tom Hanks
    assert all(r["race"] is None for r in rows)  # the age-gender models give no race: None, never guessed


def test_64px_generations_are_found_at_curation_detect_size(tmp_path, monkeypatch):
    """Faces that fill a 64x64 frame (DCGAN renders) are missed letterboxed into 640x640 and found at the
    demo's curation.detect_size=160; the setting is part of curate's key (two folders)."""
    from gandiff import pipeline
    from gandiff.config import compose
    from gandiff.curation.stage import CurateStage

    from .conftest import FAKES

    monkeypatch.setitem(pipeline.STAGE_CLASSES, "identities", FAKES["identities"])
    monkeypatch.setitem(pipeline.STAGE_CLASSES, "generate", "tests.curation.curation_fakes:FakeGenerateDCGAN")
    base = ["identity.num=2", "logger=none", f"paths.root={tmp_path}"]
    demo = compose(base)  # curation/demo.yaml: detect_size 160
    assert demo.curation.detect_size == 160
    for stage in ("identities", "generate", "curate"):
        run_stage(demo, stage)
    rows = read_table(stage_dir(demo, "curate") / "scores.parquet")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(r["gender"] in ("male", "female") for r in rows)
    for r in rows:
        lm = np.asarray(r["landmarks"]).reshape(5, 2)
        assert (lm > 0).all() and (lm < 64).all() and r["face_size"] > 30

    # batch sizes change speed only: not part of curate's own config (its key also holds the upstream keys)
    one_by_one = compose([*base, "face.batch_size=1", "face.detector.batch_size=1", "face.embedder.batch_size=1"])
    assert pipeline.stage_config(one_by_one, CurateStage()) == pipeline.stage_config(demo, CurateStage())

    letterboxed = compose([*base, "curation.detect_size=null"])
    run_stage(letterboxed, "curate")
    assert stage_dir(letterboxed, "curate") != stage_dir(demo, "curate")
    status = {r["seed"]: r["status"] for r in read_table(stage_dir(letterboxed, "curate") / "scores.parquet")}
    assert status == {5: "no_face", 23: "no_face", 28: "no_face", 0: "ok"}

