"""Caption augmentations (accessories, backgrounds drawn from landmarks) and the statistics that measure
each prompt word's effect: checked against definitions computed independently here."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from gandiff.diffusion import caption_augment as ca
from gandiff.diffusion import prompt_effects as pe

LM = pe.CANONICAL_LANDMARKS
BANK = Path(__file__).resolve().parents[2] / "conf" / "prompts" / "miniature.yaml"


def _face(skin: tuple[int, int, int], backdrop: tuple[int, int, int] = (120, 110, 100), size: int = 64) -> np.ndarray:
    """A flat 'face': a skin ellipse around the canonical landmarks on a flat backdrop, dark eyes and mouth, and
    hair: a band of dark noise over the top of the head (what a hat's uniform crown covers)."""
    import cv2

    img = np.full((size, size, 3), backdrop, np.uint8)
    cv2.ellipse(img, (33, 40), (19, 26), 0, 0, 360, skin, -1)
    hair = np.random.default_rng(sum(skin)).integers(20, 90, size=(17, 40, 1))
    img[:17, 13:53] = np.repeat(hair, 3, axis=2).astype(np.uint8)
    for x, y in LM[:2]:
        cv2.circle(img, (int(x), int(y)), 2, (40, 30, 30), -1)
    cv2.line(img, tuple(int(v) for v in LM[3]), tuple(int(v) for v in LM[4]), (150, 60, 60), 1)
    return img


FACES = [_face(s) for s in ((224, 180, 150), (190, 140, 110), (150, 100, 75), (110, 75, 55), (235, 200, 170))]


@pytest.mark.parametrize("rgb", [(200, 120, 40), (10, 240, 90), (128, 128, 128)])
def test_statistics_of_a_flat_image_equal_their_definitions(rgb):
    img = np.full((64, 64, 3), rgb, np.uint8)
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    assert pe.mouth_vs_skin(img) == pytest.approx(0.0)  # one colour: the mouth region is the skin's
    assert pe.face_luma(img) == pytest.approx(y / 255)
    assert pe.eye_darkness(img) == pytest.approx(1 - y / 255)
    assert pe.brow_texture(img) == pytest.approx(0.0)
    assert pe.backdrop_blue(img) == pytest.approx((b - (r + g) / 2) / 255)
    assert pe.backdrop_green(img) == pytest.approx((g - (r + b) / 2) / 255)
    assert pe.backdrop_white(img) == pytest.approx(min(rgb) / 255)
    assert pe.eye_edges(img) == pytest.approx(0.0)


def test_regions_sit_where_the_face_frame_says():
    # img[y, x] = x: bilinear sampling at continuous point p (pixel centres at i + 0.5) gives p.x - 0.5
    ramp = np.tile(np.arange(64, dtype=np.float64), (64, 1))
    lm = LM.astype(np.float64)
    c, d = (lm[0] + lm[1]) / 2, float(np.hypot(*(lm[1] - lm[0])))
    u = (lm[1] - lm[0]) / d
    v = np.array([-u[1], u[0]])
    for a, b in ((0.5, 0.0), (-0.5, 1.0), (0.3, -1.2)):
        want = (c + d * (a * u + b * v))[0] - 0.5
        got = pe.region_pixels(ramp, LM, (a, a, b, b), n=1)
        assert got.shape == (1, 1) and got[0, 0] == pytest.approx(want, abs=1e-9)
    # a grid point off the image is left out, not clamped
    assert len(pe.region_pixels(ramp, LM, (0.0, 0.0, -9.0, -9.0), n=1)) == 0
    # a region mostly off the image gives no values (its statistic NaN), not the statistic of a corner
    mostly_off = (0.0, 0.0, -9.0, 0.0)  # 10 rows of grid points up from the eyes: 2 of them in the image
    assert len(pe.region_pixels(ramp, LM, mostly_off, n=10, min_inside=0.0)) == 20  # of 100
    assert pe.region_pixels(ramp, LM, mostly_off, n=10).shape == (0, 1)
    high = LM - np.array([0.0, 30.0], np.float32)  # eyes near the top edge: the crown is off the image
    assert np.isnan(pe.brow_texture(np.zeros((64, 64, 3)), high))
    assert np.isfinite(pe.brow_texture(np.zeros((64, 64, 3)), LM))


def test_each_drawn_word_moves_its_statistic_and_neutral_moves_none():
    rng = np.random.default_rng(0)
    neutral = [(f, LM) for f in FACES]
    by = {w: [(ca.draw_accessory(f, LM, w, rng), LM) for f in FACES] for w in ca.ACCESSORIES}
    by |= {w: [(ca.replace_background(f, LM, w, rng), LM) for f in FACES] for w in ca.BACKGROUNDS}
    effects = {e.option: e for e in pe.option_effects(by, neutral)}
    assert set(effects) == set(ca.ACCESSORIES) | set(ca.BACKGROUNDS)
    for option, e in effects.items():
        assert e.effect > 0.02 and e.cohens_d > 1.0, e
        assert e.n_option == e.n_neutral == len(FACES)
    # the same images as "option" and neutral: no effect
    same = pe.option_effects({"wearing a hat": neutral, "blue background": neutral}, neutral)
    assert all(e.effect == 0.0 for e in same)


def test_drawing_is_a_function_of_the_seed_and_refuses_unknown_words():
    a = ca.draw_accessory(FACES[0], LM, "wearing a hat", np.random.default_rng(5))
    b = ca.draw_accessory(FACES[0], LM, "wearing a hat", np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, FACES[0])
    with pytest.raises(ValueError, match="wearing a scarf"):
        ca.draw_accessory(FACES[0], LM, "wearing a scarf", np.random.default_rng(0))
    with pytest.raises(ValueError, match="red background"):
        ca.replace_background(FACES[0], LM, "red background", np.random.default_rng(0))


def test_background_keeps_the_face_and_replaces_the_corners():
    out = ca.replace_background(FACES[0], LM, "green background", np.random.default_rng(0))
    np.testing.assert_array_equal(out[38:42, 30:36], FACES[0][38:42, 30:36])  # the face's centre
    corner = out[:4, :4].reshape(-1, 3).astype(float).mean(0)
    assert corner[1] > corner[0] + 50 and corner[1] > corner[2] + 50


def test_cohens_d_matches_its_definition():
    x, y = [1.0, 2.0, 4.0, 7.0], [0.5, 1.0, 1.5]
    pooled = (((len(x) - 1) * statistics.variance(x) + (len(y) - 1) * statistics.variance(y)) / (len(x) + len(y) - 2)) ** 0.5
    assert pe.cohens_d(np.array(x), np.array(y)) == pytest.approx((statistics.mean(x) - statistics.mean(y)) / pooled)
    assert np.isnan(pe.cohens_d(np.array([1.0]), np.array(y)))


def test_age_needs_a_classifier_and_unknown_options_are_named():
    faces = [(f, LM) for f in FACES]
    with pytest.raises(ValueError, match="age_of"):
        pe.option_effects({"old": faces}, faces)
    marked = [(f.copy(), LM) for f in FACES]
    for img, _ in marked:
        img[0, 0] = (1, 2, 3)
    (e,) = pe.option_effects({"old": marked}, faces, age_of=lambda img, lm: 60.0 if img[0, 0, 2] == 3 else 30.0)
    assert (e.option_mean, e.neutral_mean, e.effect) == (60.0, 30.0, 30.0)
    with pytest.raises(ValueError, match="smiling"):
        pe.option_effects({"smiling": faces}, faces)


def test_every_option_of_the_miniature_bank_has_a_measured_effect():
    bank = yaml.safe_load(BANK.read_text())
    options = [o for fam in bank["families"].values() for o in fam["options"]]
    assert options and set(options) <= set(pe.OPTION_EFFECTS), set(options) - set(pe.OPTION_EFFECTS)
    for stat, sign in pe.OPTION_EFFECTS.values():
        assert sign in (-1, 1) and (stat == "age" or stat in pe.STATISTICS)


def test_yaw_statistic_agrees_with_the_caption_words():
    from gandiff.diffusion.miniature import caption

    lm = LM.copy()
    lm[2, 0] += 6.0  # nose to the image's right
    assert pe.yaw(FACES[0], lm) > 0.12
    assert caption("male", None, pe.yaw(FACES[0], lm), None, False).endswith("looking left")
    assert pe.OPTION_EFFECTS["looking left"] == ("yaw", 1)
