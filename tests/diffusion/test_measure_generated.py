"""scripts/measure_generated.py, the independent measurement of a run's generated images (issue 18), on a tiny
run folder of DCGAN faces: each "generated" image is its identity's anchor, mirrored or brightened."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "measure_generated.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("measure_generated", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_folder(root: Path) -> Path:
    from gandiff.config import package_file
    from gandiff.identity.dcgan import DCGANSource

    src = DCGANSource(package_file("gan_face_generate/weights.tar"), batch_size=8)
    faces = src.render(src.to_w(src.sample([0, 1, 2])))  # (3, 64, 64, 3) uint8: three people
    run = root / "demo"
    for k, face in enumerate(faces):
        ident = run / "identities" / "k1" / "images" / f"id_{k:06d}"
        gen = run / "generate" / "k2" / "images" / f"id_{k:06d}"
        ident.mkdir(parents=True)
        gen.mkdir(parents=True)
        Image.fromarray(face).save(ident / "anchor.png")
        Image.fromarray(face[:, ::-1].copy()).save(ident / "var_00.png")
        Image.fromarray(face[:, ::-1].copy()).save(gen / f"id_{k:06d}_0000.png")
        Image.fromarray(np.clip(face.astype(int) + 12, 0, 255).astype(np.uint8)).save(gen / f"id_{k:06d}_0001.png")
    return run


def test_own_identity_scores_above_the_others_and_every_face_is_found(script, tmp_path):
    run = _run_folder(tmp_path)
    out = script.measure(run, script.build_detector(), {"sface": script.build_embedder("sface")})
    m = out["sface"]
    assert out["generated"] == 6 and out["face_rate"] == 1.0
    assert m["own_anchor"] > 0.6 > m["other_anchor"] and m["d_prime"] > 2
    assert len(m["generated_mated"]) == len(m["gan_mated"]) == 2  # mean, std


def test_a_folder_with_two_stage_keys_is_refused_by_name(script, tmp_path):
    run = _run_folder(tmp_path)
    (run / "generate" / "k3").mkdir()
    with pytest.raises(SystemExit, match=r"generate: expected one generate folder, found 2"):
        script.measure(run, script.build_detector(), {})


def test_generated_images_of_an_unknown_identity_are_refused_in_one_line(script, tmp_path):
    run = _run_folder(tmp_path)
    stray = run / "generate" / "k2" / "images" / "id_000009"
    stray.mkdir()
    Image.new("RGB", (64, 64)).save(stray / "id_000009_0000.png")
    with pytest.raises(SystemExit, match=r"generated images of \['id_000009'\] have no folder"):
        script.measure(run, script.build_detector(), {})
