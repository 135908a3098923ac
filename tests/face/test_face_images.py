"""read_image / to_rgb_uint8: every odd input gives (H, W, 3) uint8 RGB or an ImageReadError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gandiff.face.images import ImageReadError, read_image, to_rgb_uint8


def test_reads_rgb_jpeg_as_rgb(photo_paths):
    import cv2

    im = read_image(photo_paths["t1"])
    assert im.dtype == np.uint8 and im.shape == (886, 1280, 3) and im.flags["C_CONTIGUOUS"]
    bgr = cv2.imread(photo_paths["t1"])
    assert np.abs(im.astype(int) - bgr[:, :, ::-1]).mean() < 1.0  # same decode, channel order RGB


def test_truncated_file_names_the_file(tmp_path, photo_paths):
    data = Path(photo_paths["t1"]).read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(bad)


def test_not_an_image_and_missing(tmp_path):
    txt = tmp_path / "notes.png"
    txt.write_text("hello")
    with pytest.raises(ImageReadError, match="notes.png"):
        read_image(txt)
    with pytest.raises(ImageReadError, match="no such image file"):
        read_image(tmp_path / "missing.jpg")


def test_grayscale_rgba_palette_16bit(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (20, 30, 3) and (out == gray[:, :, None]).all()

    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == rgba[:, :, :3]).all()  # alpha dropped, colours untouched

    g16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert (read_image(tmp_path / "g16.png")[:, :, 0] == (g16 >> 8)).all()

    import cv2

    rgb16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])  # cv2 writes BGR
    assert (read_image(tmp_path / "c16.png") == (rgb16 >> 8)).all()

    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (20, 30, 3)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((10, 40, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (40, 10, 3)


def test_huge_image_is_refused_with_its_size(tmp_path):
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="200x100"):
        read_image(tmp_path / "big.png", max_pixels=10_000)


def test_to_rgb_uint8_arrays():
    assert to_rgb_uint8(np.ones((4, 5), bool)).max() == 255
    assert to_rgb_uint8(np.full((4, 5, 1), 0.5)).max() == 128
    with pytest.raises(ImageReadError, match=r"\[0, 1\]"):
        to_rgb_uint8(np.full((4, 5, 3), 200.0))
    with pytest.raises(ImageReadError, match="channels last"):
        to_rgb_uint8(np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(ImageReadError, match="empty"):
        to_rgb_uint8(np.zeros((0, 4, 3), np.uint8))
