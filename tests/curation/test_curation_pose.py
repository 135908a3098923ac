"""Pose from five landmarks: recovers known angles of the forward model; signs on a mirrored real face."""

from __future__ import annotations

import numpy as np
import pytest

from gandiff.curation.score import pose_from_landmarks, project_face


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (25, 0, 0), (-40, 10, 5), (10, -20, -15), (60, 5, 30)])
def test_recovers_angles_of_projected_mean_face(yaw, pitch, roll):
    rng = np.random.default_rng(0)
    lm = project_face(yaw, pitch, roll, scale=2.5, center=(300, 200)) + rng.normal(0, 0.2, (5, 2))
    y, p, r = pose_from_landmarks(lm)
    assert abs(y - yaw) < 3 and abs(p - pitch) < 3 and abs(r - roll) < 2


def test_mirroring_flips_yaw_and_roll():
    lm = project_face(30, 5, 10, scale=2.0, center=(100, 100))
    mirrored = lm.copy()
    mirrored[:, 0] = 200 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # left/right landmarks swap names in the mirror
    y, p, r = pose_from_landmarks(lm)
    ym, pm, rm = pose_from_landmarks(mirrored)
    assert ym == pytest.approx(-y, abs=1.0) and rm == pytest.approx(-r, abs=1.0) and pm == pytest.approx(p, abs=1.0)
