"""scripts/measure_generated.py, the independent measurement of a run's generated images (issue 18), on a tiny
run folder of DCGAN faces: each "generated" image is its identity's anchor, mirrored or brightened. The script
calls gandiff.evaluation.independent (tests/evaluation/test_independent_report.py: the evaluate stage gives the
same numbers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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


def _detector():
    from gandiff.evaluation.independent import build_script_detector

    return build_script_detector()


def test_own_identity_scores_above_the_others_and_every_face_is_found(measure_script, tmp_path, capsys):
    import json

    run = _run_folder(tmp_path)
    assert measure_script.main([str(run), "--embedders", "sface", "--json", str(tmp_path / "out.json")]) == 0
    (out,) = json.loads((tmp_path / "out.json").read_text())
    m = out["embedders"]["sface"]
    assert out["run"] == str(run) and out["generated"] == 6 and out["faces"] == 6 and out["face_rate"] == 1.0
    assert m["own_anchor"] > 0.6 > m["other_anchor"] and m["d_prime"] > 2
    assert m["generated_mated"]["pairs"] == m["gan_mated"]["pairs"] == 3  # one pair per identity
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:3] == [str(run), "sface", "1.000"] and f"{m['d_prime']:.3f}" in line


def test_an_embedder_that_is_not_installed_is_refused_in_one_line(measure_script, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    with pytest.raises(SystemExit, match=r"--embedders: dlib embedder skipped: dlib(, face_recognition_models)? not "
                                         r"installed \(pip install 'gandiff\[dlib\]'\)"):
        measure_script.build_embedder("dlib")
    with pytest.raises(SystemExit, match=r"--embedders: 'arcface': must be one of sface, dlib"):
        measure_script.build_embedder("arcface")


def test_a_folder_with_two_stage_keys_is_refused_by_name(measure_script, tmp_path):
    run = _run_folder(tmp_path)
    (run / "generate" / "k3").mkdir()
    with pytest.raises(SystemExit, match=r"generate: expected one generate folder, found 2"):
        measure_script.measure(run, _detector(), {})


def test_generated_images_of_an_unknown_identity_are_refused_in_one_line(measure_script, tmp_path):
    run = _run_folder(tmp_path)
    stray = run / "generate" / "k2" / "images" / "id_000009"
    stray.mkdir()
    Image.new("RGB", (64, 64)).save(stray / "id_000009_0000.png")
    with pytest.raises(SystemExit, match=r"generated images of \['id_000009'\] have no folder"):
        measure_script.measure(run, _detector(), {})
