"""What the writers take and the readers give: one face image with its integer label and identity id.

Writers take ``ExportItem`` (already-encoded bytes, so that every format stores the *same* bytes and a
round trip is exact); readers give ``Sample`` (decoded (H, W, 3) uint8 RGB). Labels are 0..C-1 in
sorted identity-id order; the stable string id travels beside the label in every format.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ExportItem:
    label: int
    identity: str  # stable id, e.g. id_000042
    image_id: str
    image: bytes  # encoded PNG/JPEG of the (aligned) face
    ext: str  # "png" | "jpg": the encoding of ``image``
    metadata: dict[str, Any] = field(default_factory=dict)  # plain scalars: attributes, scores, prompt families
    original: bytes | None = None  # encoded original (unaligned) image, when export.include_originals
    original_ext: str = "png"


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: int
    identity: str
    metadata: dict[str, Any] = field(default_factory=dict)


class ImageDecodeError(ValueError):
    """Encoded bytes that are not a readable image; the message names where they came from."""


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB (greyscale and RGBA are converted: training wants 3 channels)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageDecodeError(f"{source}: not a readable image ({e})") from None


def encode_image(image: np.ndarray, ext: str, quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG or JPEG bytes (PNG carries no timestamps: the same pixels give the same bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    if ext == "png":
        Image.fromarray(image).save(buf, format="PNG")
    elif ext == "jpg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"image format {ext!r}: must be 'png' or 'jpg'")
    return buf.getvalue()


def image_ext(data: bytes) -> str:
    """The file extension that fits encoded bytes (by magic number)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"
