"""One reader API over every dataset format gandiff writes (and the same formats made by others).

``open_dataset(path)`` finds the format and returns a picklable ``FaceDataset``: ``len(ds)``, ``ds[i]`` ->
``Sample(image (H, W, 3) uint8 RGB, label, identity, metadata)``, ``num_classes``, ``labels`` ((N,) int64,
no image decoded) and ``identities``. ``path`` may be a gandiff export folder, insightface RecordIO (a folder
with ``train.rec`` + ``train.idx``, or the ``.rec``), an imagefolder tree (with or without ``metadata.csv``)
or WebDataset shards. Training and evaluation build on it.

Design: docs/design.md#dataset-readers.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gandiff.datasets.imagefolder import IMAGE_SUFFIXES, find_metadata, read_metadata
from gandiff.datasets.recordio import RecordIOReader
from gandiff.datasets.sample import Sample, decode_image
from gandiff.datasets.webdataset import index_tar
from gandiff.errors import UserError

FORMATS = ("recordio", "imagefolder", "webdataset")
DATASET_JSON = "dataset.json"  # written by the export stage at the root of an export
IDENTITIES_CSV = "identities.csv"  # label -> identity id (+ attributes), beside train.rec


class EmptyDatasetError(UserError, ValueError):
    """An export that holds no images (curation selected none); the message says why."""


def _scalar(v: str | None) -> Any:
    """CSV cells back to numbers where they are numbers (metadata.csv stores everything as text)."""
    if v is None:
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


class FaceDataset:
    """Base class: subclasses fill ``labels``, ``identities`` and implement ``read_bytes``."""

    format = ""

    def __init__(self, path: Path):
        self.path = path
        self.labels = np.zeros(0, dtype=np.int64)  # (N,)
        self.identities: list[str] = []  # label -> identity id
        self.identity_attributes: dict[str, dict[str, Any]] = {}  # identity id -> attributes, when known

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def read_bytes(self, index: int) -> bytes:
        """The encoded image as stored (no decode): what a round-trip test compares."""
        raise NotImplementedError

    def metadata(self, index: int) -> dict[str, Any]:
        return {}

    def _check(self, index: int) -> int:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images ({self.path})")
        return index

    def __getitem__(self, index: int) -> Sample:
        index = self._check(int(index))
        label = int(self.labels[index])
        image = decode_image(self.read_bytes(index), f"{self.path} image {index}")
        return Sample(image=image, label=label, identity=self.identities[label], metadata=self.metadata(index))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, images={len(self)}, classes={self.num_classes})"


def _read_identities_csv(path: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: int(r["label"]))
    ids = [r["identity"] for r in rows]
    if [int(r["label"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: labels must be 0..{len(rows) - 1}, one row each")
    attrs = {r["identity"]: {k: _scalar(v or None) for k, v in r.items() if k not in ("label", "identity")}
             for r in rows}
    return ids, attrs


def write_identities_csv(path: Path, identities: list[str], attributes: dict[str, dict[str, Any]]) -> None:
    """``label,identity,<attributes>`` beside a dataset whose format has no room for identity ids."""
    import io

    from gandiff.artifacts import atomic_write_text

    keys = sorted({k for a in attributes.values() for k in a})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "identity", *keys])
    for label, ident in enumerate(identities):
        a = attributes.get(ident, {})
        w.writerow([label, ident, *("" if a.get(k) is None else a.get(k) for k in keys)])
    atomic_write_text(path, buf.getvalue())


class RecordIODataset(FaceDataset):
    format = "recordio"

    def __init__(self, path: Path):
        super().__init__(path)
        self.reader = RecordIOReader(path)
        self.labels = self.reader.labels()
        side = self.reader.rec_path.parent / IDENTITIES_CSV
        if side.exists():
            self.identities, self.identity_attributes = _read_identities_csv(side)
        else:  # a public .rec: labels are all there is
            self.identities = [str(i) for i in range(self.reader.num_classes)]
        if len(self.labels) and int(self.labels.max()) >= len(self.identities):
            raise ValueError(f"{path}: label {int(self.labels.max())} >= num_classes {len(self.identities)} "
                             f"(property or {IDENTITIES_CSV} disagrees with the records)")

    def read_bytes(self, index: int) -> bytes:
        return self.reader.read(self._check(index))[1]

    def metadata(self, index: int) -> dict[str, Any]:
        return {"key": int(self.reader.image_keys[index])}


class ImageFolderDataset(FaceDataset):
    format = "imagefolder"

    def __init__(self, path: Path):
        super().__init__(path)
        meta = find_metadata(path)
        if meta is not None:
            rows = read_metadata(meta)
            base = meta.parent
            self.files = [base / r["file_name"] for r in rows]
            if rows and all(r.get("label") is not None for r in rows):
                labels = [int(r["label"]) for r in rows]
                ident_of: dict[int, str] = {}
                for r, lab in zip(rows, labels):
                    ident_of.setdefault(lab, str(r.get("identity") or lab))
                n_cls = max(labels) + 1
                self.identities = [ident_of.get(i, str(i)) for i in range(n_cls)]
            else:  # metadata without labels: label by identity (or folder) name, sorted
                names = [str(r.get("identity") or Path(r["file_name"]).parent.name) for r in rows]
                self.identities = sorted(set(names))
                pos = {n: i for i, n in enumerate(self.identities)}
                labels = [pos[n] for n in names]
            self.labels = np.array(labels, dtype=np.int64)
            skip = {"file_name", "label"}
            self._meta = [{k: _scalar(v) if isinstance(v, str) else v for k, v in r.items() if k not in skip}
                          for r in rows]
        else:
            split = path / "train" if (path / "train").is_dir() and not any(
                p.suffix.lower() in IMAGE_SUFFIXES for p in path.glob("*/*")) else path
            classes = sorted(p.name for p in split.iterdir() if p.is_dir())
            files, labels = [], []
            for i, c in enumerate(classes):
                imgs = sorted(p for p in (split / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                files += imgs
                labels += [i] * len(imgs)
            self.files = files
            self.identities = classes
            self.labels = np.array(labels, dtype=np.int64)
            self._meta = [{"identity": classes[lab], "image_id": f.stem} for f, lab in zip(files, labels)]
        self.identity_attributes = _identity_attributes(self._meta, self.identities, self.labels)

    def read_bytes(self, index: int) -> bytes:
        p = self.files[self._check(index)]
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: listed in the metadata of {self.path} but missing") from None

    def metadata(self, index: int) -> dict[str, Any]:
        return dict(self._meta[index])


class WebDatasetDataset(FaceDataset):
    format = "webdataset"

    def __init__(self, path: Path):
        super().__init__(path)
        shards = [path] if path.is_file() else sorted(path.glob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"{path}: no .tar shards")
        self.entries: list[tuple[Path, dict[str, Any]]] = []
        metas, labels = [], []
        for shard in shards:
            for s in index_tar(shard):
                members = s["members"]
                if "cls" not in members:
                    raise ValueError(f"{shard}: sample {s['key']!r} has no .cls member (the integer label)")
                img_ext = next((e for e in ("png", "jpg", "jpeg", "webp") if e in members), None)
                if img_ext is None:
                    raise ValueError(f"{shard}: sample {s['key']!r} has no image member (.png/.jpg/.webp)")
                s["image"] = members[img_ext]
                self.entries.append((shard, s))
                labels.append(int(self._member(shard, members["cls"]).decode("ascii").strip()))
                meta = json.loads(self._member(shard, members["json"])) if "json" in members else {}
                meta.pop("label", None)
                metas.append(meta)
        self.labels = np.array(labels, dtype=np.int64)
        self._meta = metas
        n_cls = int(self.labels.max()) + 1 if len(labels) else 0
        ident_of: dict[int, str] = {}
        for m, lab in zip(metas, labels):
            ident_of.setdefault(lab, str(m.get("identity", lab)))
        self.identities = [ident_of.get(i, str(i)) for i in range(n_cls)]
        self.identity_attributes = _identity_attributes(metas, self.identities, self.labels)

    @staticmethod
    def _member(shard: Path, where: tuple[int, int]) -> bytes:
        with open(shard, "rb") as f:
            f.seek(where[0])
            return f.read(where[1])

    def read_bytes(self, index: int) -> bytes:
        shard, s = self.entries[self._check(index)]
        return self._member(shard, s["image"])

    def metadata(self, index: int) -> dict[str, Any]:
        return dict(self._meta[index])


ATTRIBUTE_KEYS = ("gender", "age_bin", "race")


def _identity_attributes(metas: list[dict[str, Any]], identities: list[str], labels: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict[str, Any]] = {}
    for m, lab in zip(metas, labels.tolist()):
        ident = identities[lab]
        if ident not in out:
            out[ident] = {k: m.get(k) for k in ATTRIBUTE_KEYS if k in m}
    return out


def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """(format, the path its reader opens) for any supported dataset path; a clear error otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such dataset file or folder")
    if p.is_file():
        if p.suffix == ".rec":
            return "recordio", p
        if p.suffix == ".tar":
            return "webdataset", p
        raise ValueError(f"{p}: not a dataset file (expected a .rec, a .tar, or a folder)")
    if (p / "train.rec").exists():
        return "recordio", p / "train.rec"
    if find_metadata(p) is not None:
        return "imagefolder", p
    if any(p.glob("*.tar")):
        return "webdataset", p
    if any(q.is_dir() for q in p.iterdir()) and any(
            f.suffix.lower() in IMAGE_SUFFIXES for f in list(p.glob("*/*"))[:1000] + list(p.glob("*/*/*"))[:1000]):
        return "imagefolder", p
    raise ValueError(f"{p}: no dataset found (looked for train.rec, metadata.csv, *.tar shards, "
                     f"or <class>/<image> folders)")


def open_dataset(path: str | os.PathLike, format: str | None = None) -> FaceDataset:
    """Open any supported dataset; ``format`` picks one inside a gandiff export that holds several."""
    p = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"format={format!r}: must be one of {', '.join(FORMATS)}")
    if p.is_dir() and (p / DATASET_JSON).exists():  # a gandiff export root
        info = json.loads((p / DATASET_JSON).read_text(encoding="utf-8"))
        if info.get("empty"):
            raise EmptyDatasetError(f"{p}: the export is empty: {info.get('reason', 'no images were selected')} "
                                    f"(see {p / 'README.md'})")
        present = [f for f in FORMATS if (p / f).is_dir()]
        if format is not None and format not in present:
            raise FileNotFoundError(f"{p}: no {format} export here (present: {', '.join(present) or 'none'})")
        if not present:
            raise FileNotFoundError(f"{p}: an export folder with no dataset formats in it")
        p = p / (format or present[0])
    fmt, target = detect_format(p)
    if format is not None and fmt != format:
        raise ValueError(f"{path}: looks like {fmt}, not {format}")
    cls = {"recordio": RecordIODataset, "imagefolder": ImageFolderDataset, "webdataset": WebDatasetDataset}[fmt]
    return cls(target)
