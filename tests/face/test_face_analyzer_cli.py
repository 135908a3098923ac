"""FaceAnalyzer (detect -> align -> embed -> classify) and the `gandiff faces` tool, with the real config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gandiff.face.analyzer import FaceAnalyzer, build_analyzer, largest_face
from gandiff.face.attributes import Attributes


@pytest.fixture(scope="module")
def analyzer(yunet, sface, age_gender):
    return FaceAnalyzer(yunet, sface, age_gender)


def test_analyze_t1(analyzer, photos):
    faces = analyzer.analyze(photos["t1"])
    assert len(faces) == 6
    for f in faces:
        assert f.aligned.shape == (112, 112, 3) and f.embedding.shape == (128,)
        assert isinstance(f.attributes, Attributes) and f.attributes.gender is not None
    assert largest_face(faces).detection.area == max(f.detection.area for f in faces)


def test_analyze_batch_matches_single(analyzer, photos):
    images = [photos["astronaut"], np.zeros((64, 64, 3), np.uint8), photos["grace_hopper"]]
    batch = analyzer.analyze_batch(images)
    assert [len(b) for b in batch] == [1, 0, 1]
    single = analyzer.analyze(photos["grace_hopper"])[0]
    np.testing.assert_allclose(batch[2][0].embedding, single.embedding, atol=1e-5)
    emb, found = analyzer.embed_images(images)
    assert found.tolist() == [True, False, True] and emb.shape == (3, 128) and not emb[1].any()


def test_analyze_file_reasons(analyzer, tmp_path, photo_paths):
    from PIL import Image

    cut = tmp_path / "cut.jpg"
    data = Path(photo_paths["t1"]).read_bytes()
    cut.write_bytes(data[:2000])
    res = analyzer.analyze_file(cut)
    assert res.faces == [] and "cut.jpg" in res.reason
    Image.fromarray(np.full((50, 80), 128, np.uint8)).save(tmp_path / "gray.png")
    assert analyzer.analyze_file(tmp_path / "gray.png").reason == "no face detected"
    small = FaceAnalyzer(analyzer.detector, analyzer.embedder, min_face_size=500)
    assert "smaller than min_face_size" in small.analyze_file(photo_paths["astronaut"]).reason


def test_build_analyzer_from_default_config():
    from gandiff.config import compose

    cfg = compose(["logger=none"])
    built = build_analyzer(cfg.face, cfg.attributes, device="cpu")
    assert type(built.detector).__name__ == "YuNetDetector" and built.embedder.dim == 128
    assert type(built.classifier).__name__ == "AgeGenderClassifier"


def test_cli_two_images(capsys, photo_paths):
    from gandiff.face.cli import main

    assert main([photo_paths["astronaut"], photo_paths["grace_hopper"], "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "astronaut.png 512x512: 1 face(s)" in out and "different people" in out and "female" in out
    assert main([photo_paths["astronaut"], photo_paths["astronaut"], "--threshold", "0.5"]) == 0
    assert "similarity (largest faces): 1.0000" in capsys.readouterr().out


def test_cli_folder_json_and_errors(capsys, tmp_path, photo_paths):
    import shutil

    from gandiff.face.cli import main

    shutil.copy(photo_paths["t1"], tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    assert main([str(tmp_path), "--json", "--no-attributes"]) == 1  # one unreadable image
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines[0]["faces"]) == 6 and lines[0]["faces"][0]["attributes"] is None
    assert lines[1]["faces"] == [] and "b.jpg" in lines[1]["reason"]
    assert main([photo_paths["astronaut"], "--embedder-model", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert "face.embedder.model_path" in err and "missing.onnx" in err and len(err.strip().splitlines()) == 1
