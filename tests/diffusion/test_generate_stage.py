"""The generate stage on top of the dreambooth stage: manifest, prompt spread, resume, replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from .conftest import compose_run

from gandiff.artifacts import read_table
from gandiff.pipeline import run_stage


@pytest.fixture(scope="module")
def generate_run(tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("run")
    cfg = compose_run(root, tiny_base, "dreambooth.steps=1", "dreambooth.prior_weight=0")
    run_stage(cfg, "identities")
    run_stage(cfg, "dreambooth")
    return cfg, run_stage(cfg, "generate")


def test_generate_manifest(generate_run):
    _, summary = generate_run
    assert summary["status"] == "done" and summary["images"] == 12
    out = Path(summary["dir"])
    rows = read_table(out / "images.parquet")
    assert len({r["image_id"] for r in rows}) == 12
    r = rows[0]
    assert r["image_id"] == "id_000000_0000" and r["id"] == "id_000000"
    assert r["prompt"].startswith("a photo of sks woman")
    families = ("accessories", "pose", "expression", "context", "lighting")
    assert all(f"choice_{f}" in r for f in families)
    for row in rows:  # the prompt says exactly what the choice columns say
        for f in families:
            if row[f"choice_{f}"]:
                assert row[f"choice_{f}"] in row["prompt"]
    assert {r["scheduler"] for r in rows} == {"ddim"} and {r["steps"] for r in rows} == {2}
    assert len({r["seed"] for r in rows}) == 12
    # Batches of 4 mix identities: 3 images each, so batch 0 holds id 0 (x3) and id 1 (x1).
    first = [r["id"] for r in rows if r["batch"] == rows[0]["batch"]]
    assert first == ["id_000000"] * 3 + ["id_000001"]
    from PIL import Image

    assert Image.open(out / r["path"]).size == (64, 64)


def test_generate_resume_redoes_truncated_image(generate_run):
    cfg, summary = generate_run
    out = Path(summary["dir"])
    png = out / "images/id_000002/id_000002_0001.png"
    good = png.read_bytes()
    png.write_bytes(good[:100])
    (out / "stage.json").unlink()
    assert run_stage(cfg, "generate")["status"] == "done"
    assert png.read_bytes() == good  # the same batches again: the same pixels, the same bytes


def test_replay_gives_the_same_pixels(generate_run):
    from gandiff.diffusion.generate_stage import replay

    cfg, _ = generate_run
    result = replay(cfg, "id_000001_0002")
    assert result["identical"] and result["max_abs_diff"] == 0
    assert Path(result["replay_path"]).exists()
    from gandiff.pipeline import StageError

    with pytest.raises(StageError, match="no such image_id"):
        replay(cfg, "id_999999_0000")
