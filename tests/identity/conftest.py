"""Shared fixtures for the identity tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dcgan_weights():
    from gandiff.config import package_file

    return package_file("gan_face_generate/weights.tar")
