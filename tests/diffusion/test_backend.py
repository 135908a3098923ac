"""The diffusion-backend protocol: a new backend is one class and one YAML file, and the real dreambooth and
generate stages run it unchanged (tests/diffusion/anchor_backend.py: no per-identity training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gandiff.artifacts import read_json, read_table
from gandiff.pipeline import StageError, load_stage, run_pipeline, run_stage, stage_config, stage_key

from .conftest import compose_run

CONF = Path(__file__).parent / "conf"


def _anchor_cfg(root: Path, tiny_base: Path, *overrides: str):
    return compose_run(root, tiny_base, f"hydra.searchpath=[file://{CONF}]", "dreambooth=anchor",
                       "identity.num=3", "generation.images_per_identity=3", "generation.identities_per_group=2",
                       *overrides)


@pytest.fixture(scope="module")
def anchor_run(tmp_path_factory, tiny_base):
    cfg = _anchor_cfg(tmp_path_factory.mktemp("run"), tiny_base)
    summaries = run_pipeline(cfg, stages=["identities", "dreambooth", "generate"])
    return cfg, summaries


def test_the_yaml_file_picks_the_backend(tmp_path, tiny_base):
    cfg = _anchor_cfg(tmp_path, tiny_base)
    assert cfg.dreambooth.backend._target_ == "tests.diffusion.anchor_backend.AnchorBackend"
    assert cfg.dreambooth.backend.noise == 6.0
    from gandiff.diffusion.backend import DiffusionBackend, build_backend

    backend = build_backend(cfg.dreambooth.backend, None, 0, tmp_path)
    assert isinstance(backend, DiffusionBackend) and backend.noise == 6.0


def test_backend_key_only_when_not_the_default(tmp_path, tiny_base):
    """The default backend leaves the stage keys as they were before the option existed; another one changes them."""
    default = compose_run(tmp_path, tiny_base)
    sd = "gandiff.diffusion.sd_backend.StableDiffusionBackend"
    stated = compose_run(tmp_path, tiny_base, f"dreambooth.backend._target_={sd}")
    other = compose_run(tmp_path, tiny_base, "dreambooth.backend._target_=tests.diffusion.anchor_backend.AnchorBackend")
    assert stage_key(default, "dreambooth") == stage_key(stated, "dreambooth")
    hashed = stage_config(default, load_stage("dreambooth"))
    assert "backend" not in hashed["dreambooth"] and "dreambooth.backend" not in hashed
    assert stage_config(other, load_stage("dreambooth"))["dreambooth.backend"]["_target_"].endswith("AnchorBackend")
    assert stage_key(default, "dreambooth") != stage_key(other, "dreambooth")
    assert stage_key(default, "generate") != stage_key(other, "generate")


def test_dreambooth_stage_saves_each_identity_conditioning(anchor_run):
    cfg, _ = anchor_run
    summary = run_stage(cfg, "dreambooth")  # a rerun: nothing to do
    assert summary["status"] == "up-to-date"
    out = Path(summary["dir"])
    rows = read_table(out / "adapters.parquet")
    assert [r["id"] for r in rows] == ["id_000000", "id_000001", "id_000002"]
    assert {r["mode"] for r in rows} == {"anchor"} and {r["steps"] for r in rows} == {0}
    assert rows[0]["path"] == "adapters/id_000000/anchor.npy"
    assert rows[0]["instance_prompt"] == "a photo of sks person"
    assert read_json(out / "adapters/id_000000/loss.json")["loss"] == []
    code = np.load(out / rows[1]["path"])
    assert code.shape == (8, 8, 3)
    assert not (out / "class_images").exists()  # prior preservation is Stable Diffusion's business


def test_generate_stage_renders_each_identity_from_its_anchor(anchor_run, tiny_base):
    cfg, _ = anchor_run
    summary = run_stage(cfg, "generate")
    assert summary["status"] == "up-to-date" and summary["images"] == 9
    out = Path(summary["dir"])
    rows = read_table(out / "images.parquet")
    ident_dir = Path(run_stage(cfg, "identities")["dir"])
    anchors = {k: np.asarray(Image.open(ident_dir / "images" / k / "anchor.png").convert("RGB"), np.float32)
               for k in ("id_000000", "id_000001", "id_000002")}
    for r in rows:
        img = np.asarray(Image.open(out / r["path"]), np.float32)
        assert img.shape == (64, 64, 3) and r["dtype"] == "float32"
        dist = {k: np.abs(img - a).mean() for k, a in anchors.items()}
        assert min(dist, key=dist.get) == r["id"]  # the image's slot is its own identity's adapter
    # Groups of 2 identities: the first batch mixes identities 0 and 1, each through its own slot.
    first = [r["id"] for r in rows if r["batch"] == rows[0]["batch"]]
    assert set(first) == {"id_000000", "id_000001"}
    from gandiff.diffusion.generate_stage import replay

    assert replay(cfg, "id_000002_0001")["identical"]


def test_a_target_that_is_no_backend_is_one_clear_error(tmp_path, tiny_base):
    cfg = compose_run(tmp_path, tiny_base, "identity.num=1", "dreambooth.backend._target_=builtins.dict")
    run_stage(cfg, "identities")
    with pytest.raises(StageError, match="backend._target_='builtins.dict': gives a dict, not a DiffusionBackend"):
        run_stage(cfg, "dreambooth")
    cfg = compose_run(tmp_path, tiny_base, "identity.num=1", "dreambooth.backend._target_=no.such.Backend")
    with pytest.raises(StageError, match="dreambooth.backend._target_='no.such.Backend' could not be imported"):
        run_stage(cfg, "dreambooth")
