"""insightface RecordIO (``train.rec`` / ``train.idx`` / ``property``), written and read without mxnet.

The layout every insightface training set ships in (MS1MV2/3, Glint360K, CASIA-WebFace) and arcface_torch's
``MXFaceDataset`` reads: a dmlc RecordIO stream of ``IRHeader`` + image payloads (records split at an embedded
magic word, as dmlc-core does), a text index, key 0 a header record, one record per identity after the images
(insightface's ``RecBuilder`` order). ``RecordIOReader`` reads both header conventions arcface_torch accepts and
array labels. PNG by default, so a round trip is exact.

Design: docs/design.md#recordio.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gandiff.artifacts import atomic_path, atomic_write_text
from gandiff.errors import UserError

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"  # mxnet uses native 'IfQQ': the same 24 bytes on every little-endian host
IR_SIZE = struct.calcsize(IR_FORMAT)
MAX_RECORD = 1 << 29  # dmlc: lrecord keeps 29 bits for the length


class RecordIOError(UserError, ValueError):
    """A ``.rec`` / ``.idx`` / ``property`` file that does not follow the format; the message names it."""


class RecordIOKeyError(RecordIOError):
    """A record key that ``train.idx`` does not list (an incomplete or foreign index); names both files."""


@dataclass(frozen=True)
class IRHeader:
    """mxnet ``recordio.IRHeader``: ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


# --------------------------------------------------------------------------------------------- payloads


def pack(header: IRHeader | tuple, payload: bytes) -> bytes:
    """mxnet ``recordio.pack``: a scalar label goes in the header (flag 0); an array goes after it."""
    flag, label, id_, id2 = header if isinstance(header, tuple) else (header.flag, header.label, header.id, header.id2)
    if np.ndim(label) == 0:
        return struct.pack(IR_FORMAT, 0, float(label), int(id_), int(id2)) + payload
    arr = np.asarray(label, dtype="<f4").ravel()
    return struct.pack(IR_FORMAT, arr.size, 0.0, int(id_), int(id2)) + arr.tobytes() + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """mxnet ``recordio.unpack``."""
    if len(record) < IR_SIZE:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = struct.unpack(IR_FORMAT, record[:IR_SIZE])
    rest = record[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"record header says {flag} float labels but only {len(rest)} bytes follow")
        return IRHeader(flag, np.frombuffer(rest[: 4 * flag], dtype="<f4").copy(), id_, id2), rest[4 * flag:]
    return IRHeader(flag, label, id_, id2), rest


# --------------------------------------------------------------------------------------------- record stream


def encode_record(payload: bytes) -> bytes:
    """The bytes dmlc ``RecordIOWriter::WriteRecord`` writes for one record (split at aligned magic words)."""
    n = len(payload)
    if n >= MAX_RECORD:
        raise RecordIOError(f"record of {n} bytes: RecordIO records must be < 2^29 bytes")
    out = bytearray()
    start = 0
    for i in range(0, n - n % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            out += _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | (i - start)) + payload[start:i]
            start = i + 4
    cflag = 3 if start != 0 else 0
    out += _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | (n - start)) + payload[start:]
    out += b"\0" * (-n % 4)  # parts before the last are 4-aligned already: only the tail is padded
    return bytes(out)


def read_record_at(f: BinaryIO, offset: int, source: str = "train.rec", key: int | None = None) -> bytes:
    """dmlc ``RecordIOReader::NextRecord`` from ``offset``: join the parts, putting back the magic words."""
    size = f.seek(0, os.SEEK_END)  # any seekable stream (a file, BytesIO)
    which = f"key {key}'s offset" if key is not None else "offset"
    if not 0 <= offset < size:
        raise RecordIOError(f"{source}: {which} {offset} is past the end of the file ({size} bytes): the .idx "
                            "does not belong to this .rec (or the .rec was cut short)")
    f.seek(offset)
    parts = []
    while True:
        head = f.read(8)
        if len(head) != 8:
            raise RecordIOError(f"{source}: truncated record header at byte {f.tell() - len(head)} "
                                f"(the file has {size} bytes)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise RecordIOError(f"{source}: no RecordIO magic at byte {f.tell() - 8} "
                                f"(found {magic:#010x}, expected {MAGIC:#010x}): wrong offset in the .idx?")
        cflag, length = lrec >> 29, lrec & (MAX_RECORD - 1)
        data = f.read((length + 3) & ~3)
        if len(data) < length:
            raise RecordIOError(f"{source}: record at byte {offset} is truncated: it needs {length} bytes from "
                                f"byte {f.tell() - len(data)}, past the end of the file ({size} bytes)")
        parts.append(data[:length])
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if cflag not in (1, 2):
            raise RecordIOError(f"{source}: bad continuation flag {cflag} at byte {f.tell() - 8 - len(data)}")


# --------------------------------------------------------------------------------------------- writer


def _encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class RecordIOWriter:
    """Write an insightface training set: call ``add_identity(label, images)`` per class, then ``close()``.

    Labels must be added in increasing order from 0 (insightface's ``RecBuilder`` asserts the same), so that
    the identity records, the labels and ``property`` agree. ``images`` are encoded image bytes (written as
    they are) or (H, W, 3) uint8 RGB arrays (encoded as ``image_format``).

    ``train.rec`` and ``train.idx`` are written to temporaries and renamed at ``close()``: a killed run
    leaves no half dataset that looks finished.
    """

    def __init__(self, out_dir: str | os.PathLike, image_size: tuple[int, int] = (112, 112),
                 image_format: str = "png", quality: int = 95):
        if image_format not in ("png", "jpg"):
            raise ValueError(f"image_format={image_format!r}: must be 'png' or 'jpg'")
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.image_size = image_size
        self.image_format = image_format
        self.quality = quality
        self._rec_ctx = atomic_path(self.dir / "train.rec")
        self._rec_tmp = self._rec_ctx.__enter__()
        self._rec = open(self._rec_tmp, "wb")
        self._idx_lines: list[str] = []
        self._key = 1
        self._identities: list[tuple[int, int]] = []
        self._closed = False

    def _write(self, key: int, payload: bytes) -> None:
        self._idx_lines.append(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode_record(payload))

    def add_identity(self, label: int, images: Iterable[bytes | np.ndarray]) -> int:
        """Write one class's images; returns how many."""
        if label != len(self._identities):
            raise ValueError(f"RecordIOWriter: label {label} added after {len(self._identities)} identities; "
                             f"labels must be 0, 1, 2, ... in order")
        first = self._key
        for img in images:
            data = img if isinstance(img, bytes) else _encode_image(img, self.image_format, self.quality)
            self._write(self._key, pack((0, float(label), self._key, 0), data))
            self._key += 1
        if self._key == first:
            raise ValueError(f"RecordIOWriter: identity with label {label} has no images")
        self._identities.append((first, self._key))
        return self._key - first

    def close(self) -> dict[str, int]:
        """Write identity records, the header record, ``train.idx`` and ``property``; rename into place."""
        if self._closed:
            raise RuntimeError("RecordIOWriter.close() called twice")
        self._closed = True
        num_images = self._key - 1
        first_id_key = self._key
        for start, end in self._identities:
            self._write(self._key, pack((2, [start, end], self._key, 0), b""))
            self._key += 1
        self._write(0, pack((2, [first_id_key, self._key], 0, 1), b""))
        self._rec.close()
        self._rec_ctx.__exit__(None, None, None)
        atomic_write_text(self.dir / "train.idx", "".join(self._idx_lines))
        atomic_write_text(self.dir / "property", f"{len(self._identities)},{self.image_size[0]},{self.image_size[1]}\n")
        return {"images": num_images, "classes": len(self._identities)}

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._rec.close()
            try:
                self._rec_ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()


def write_recordio(out_dir: str | os.PathLike, identities: Sequence[Sequence[bytes | np.ndarray]],
                   image_size: tuple[int, int] = (112, 112), image_format: str = "png") -> dict[str, int]:
    """Write ``identities[label] = [image, ...]`` as an insightface RecordIO set."""
    with RecordIOWriter(out_dir, image_size=image_size, image_format=image_format) as w:
        for label, imgs in enumerate(identities):
            w.add_identity(label, imgs)
        return w.close()


# --------------------------------------------------------------------------------------------- reader


def read_index(idx_path: str | os.PathLike) -> dict[int, int]:
    """``train.idx`` -> {key: byte offset}; a clear error naming the line that is wrong."""
    idx_path = Path(idx_path)
    out: dict[int, int] = {}
    with open(idx_path, encoding="ascii", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            try:
                out[int(fields[0])] = int(fields[1])
            except (ValueError, IndexError):
                raise RecordIOError(f"{idx_path}:{n}: expected '<key>\\t<offset>', got {line.strip()[:60]!r}") from None
    return out


def read_property(path: str | os.PathLike) -> tuple[int, int, int]:
    """``property`` -> (num_classes, height, width)."""
    text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    try:
        c, h, w = (int(x) for x in text.split(","))
    except ValueError:
        raise RecordIOError(f"{path}: expected '<num_classes>,<height>,<width>', got {text[:60]!r}") from None
    return c, h, w


class RecordIOReader:
    """Random access to an insightface ``train.rec``: images, their labels and the identity ranges.

    Thread-safe for reading from several DataLoader workers: each process opens its own file handle lazily
    (the handle is not pickled).
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        if self.rec_path.is_dir():
            self.rec_path = self.rec_path / "train.rec"
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        for p in (self.rec_path, self.idx_path):
            if not p.exists():
                raise FileNotFoundError(f"{p}: RecordIO dataset file not found (need train.rec and train.idx)")
        self.offsets = read_index(self.idx_path)
        self._f: BinaryIO | None = None
        self._pid = -1
        prop = self.rec_path.parent / "property"
        self.property = read_property(prop) if prop.exists() else None
        self.header0: tuple[int, int] | None = None
        self.identity_ranges: list[tuple[int, int]] = []
        if 0 in self.offsets:
            h, _ = unpack(self.read_raw(0))
            if h.flag > 0:
                self.header0 = (int(h.label[0]), int(h.label[1]))
        if self.header0 is not None:
            self.image_keys = np.arange(1, self.header0[0], dtype=np.int64)
            for key in range(self.header0[0], self.header0[1]):
                h, _ = unpack(self.read_raw(key))
                if h.flag < 2:
                    raise RecordIOError(f"{self.rec_path}: identity record {key} has flag {h.flag}, expected 2")
                self.identity_ranges.append((int(h.label[0]), int(h.label[1])))
        else:  # a plain indexed .rec: every key is an image (arcface_torch does the same)
            self.image_keys = np.array(list(self.offsets), dtype=np.int64)
        # An image key the index does not list is read as a RecordIOKeyError (training skips and counts it,
        # like an undecodable image); an index that lists none of them belongs to another .rec.
        listed = np.fromiter(self.offsets, dtype=np.int64, count=len(self.offsets))
        absent = self.image_keys[~np.isin(self.image_keys, listed)]
        self.missing_keys = int(len(absent))
        if self.missing_keys and self.missing_keys == len(self.image_keys):
            raise RecordIOError(f"{self.idx_path}: none of the image keys {int(absent[0])}..{int(absent[-1])} of the "
                                f"header record in {self.rec_path.name} is in the index")
        if self.missing_keys:
            log.warning("%s: %d of %d image keys are not listed (e.g. key %d): those images cannot be read and "
                        "will be skipped", self.idx_path, self.missing_keys, len(self.image_keys), int(absent[0]))
        self._labels: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_f"] = None
        return state

    def _file(self) -> BinaryIO:
        if self._f is None or self._pid != os.getpid():
            self._f = open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def read_raw(self, key: int) -> bytes:
        if key not in self.offsets:
            raise RecordIOKeyError(f"{self.idx_path}: no record with key {key} (the index lists {len(self.offsets)} "
                                   f"keys; {self.rec_path.name} should have one line per record: rebuild the .idx "
                                   "or re-export)")
        return read_record_at(self._file(), self.offsets[key], str(self.rec_path), key)

    def __len__(self) -> int:
        return len(self.image_keys)

    def read(self, index: int) -> tuple[int, bytes]:
        """Image ``index`` (0-based, in key order) -> (label, encoded image bytes)."""
        h, data = unpack(self.read_raw(int(self.image_keys[index])))
        label = h.label if h.flag == 0 else h.label[0]
        return int(label), data

    def labels(self) -> np.ndarray:
        """(N,) int64 labels of every image: from the identity records when present (no image read)."""
        if self._labels is None:
            # Identity records give every label without reading images, *if* class i is the i-th identity
            # record (insightface's RecBuilder); checked on up to 32 identities, else every header is read.
            ranges = self.identity_ranges
            step = max(1, len(ranges) // 32)
            if ranges and all(self._first_label(*ranges[c]) in (c, None) for c in range(0, len(ranges), step)):
                labels = np.empty(len(self), dtype=np.int64)
                for label, (start, end) in enumerate(ranges):
                    labels[start - 1:end - 1] = label
                self._labels = labels
            else:
                self._labels = np.array([self.read(i)[0] for i in range(len(self))], dtype=np.int64)
        return self._labels

    def _first_label(self, start: int, end: int) -> int | None:
        """The label of the first listed image key in [start, end); None when none is listed."""
        key = next((k for k in range(start, end) if k in self.offsets), None)
        return None if key is None else self.read(key - 1)[0]  # header sets: image key k is index k - 1

    @property
    def num_classes(self) -> int:
        if self.property is not None:
            return self.property[0]
        if self.identity_ranges:
            return len(self.identity_ranges)
        return int(self.labels().max()) + 1 if len(self) else 0
