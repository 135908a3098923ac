"""A real pipeline run of curate on fake (but real-format, real-face) identities and generate outputs."""

from __future__ import annotations

import pytest

from gandiff import pipeline

FAKES = {"identities": "curation_fakes:FakeIdentities", "generate": "curation_fakes:FakeGenerate"}
BASE = ["identity.num=10", "generation.images_per_identity=4", "attributes.classifier=null", "logger=none",
        "curation.min_images=2", "curation.max_images=3", "curation.balance=false"]


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
