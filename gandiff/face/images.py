"""Reading images into the toolkit's one pixel convention: ``(H, W, 3)`` uint8 RGB, C-contiguous.

Every model in ``gandiff.face`` takes that array, so every odd format is dealt with here, once, with a
clear error instead of a crash deep inside OpenCV: grayscale, palette, CMYK, RGBA (alpha dropped),
16-bit (high byte kept), float arrays in [0, 1], EXIF-rotated phone photos, truncated or non-image
files, and images too large to decode safely.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gandiff.errors import UserError

# PIL's own decompression-bomb limit is ~89 Mpx (warns) / 179 Mpx (raises). 120 Mpx covers any camera;
# beyond it a file is refused with a message rather than exhausting memory on a shared node.
MAX_PIXELS = 120_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


class ImageReadError(UserError, ValueError):
    """An image that cannot be read or converted; the message names the file and the problem."""


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3)`` uint8 RGB, applying the EXIF orientation.

    Raises ImageReadError (a ValueError) for a missing, truncated, non-image or oversized file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ImageReadError(f"{path}: {width}x{height} pixels is more than the {max_pixels} allowed "
                                     "(read_image(max_pixels=...) raises the limit)")
            im.load()  # decodes now, so a truncated file fails here and not later
            im = ImageOps.exif_transpose(im)
            array = _pil_to_array(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file PIL can identify") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL raises OSError("image file is truncated ...") for cut-off JPEG/PNG files.
        raise ImageReadError(f"{path}: cannot decode ({e})") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{path}: empty image ({array.shape[1]}x{array.shape[0]})")
    return to_rgb_uint8(array, name=str(path))


def _pil_to_array(im) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.uint16)
    if mode in ("I", "F"):
        a = np.asarray(im)
        # 32-bit int / float images: no fixed range, so stretch to the image's own max (documented loss).
        a = a.astype(np.float64)
        top = float(a.max()) if a.size else 1.0
        return (np.clip(a / (top if top > 0 else 1.0), 0, 1) * 255 + 0.5).astype(np.uint8)
    if mode in ("RGB", "L", "RGBA"):
        return np.asarray(im)
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))  # P, CMYK, YCbCr, 1, LAB, HSV ...


def to_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Any common in-memory image to ``(H, W, 3)`` uint8 RGB.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (taken as RGB: the toolkit never guesses BGR) and
    ``(H, W, 4)`` (RGBA: alpha dropped). dtypes: uint8; uint16 (``x >> 8``); bool; float in [0, 1].
    ``name`` only labels error messages.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"{name}: shape {a.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) "
                             "RGB or (H, W, 4) RGBA (channels last)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageReadError(f"{name}: empty image, shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
            raise ImageReadError(f"{name}: float image must hold values in [0, 1], got "
                                 f"[{np.nanmin(a):.3g}, {np.nanmax(a):.3g}]; pass uint8 for 0..255 data")
        a = (a * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageReadError(f"{name}: dtype {a.dtype} is not supported; use uint8, uint16, bool or float in [0, 1]")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (the order results are reported in)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
