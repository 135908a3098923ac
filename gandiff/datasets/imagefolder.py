"""Hugging Face ``imagefolder`` layout: image files plus one ``metadata.csv`` that ``datasets`` reads.

    <root>/train/metadata.csv                 file_name,label,identity,image_id,<attributes...>
    <root>/train/<identity>/<image_id>.png

``label`` is an integer column (with a metadata file ``datasets`` does not infer labels from folders);
originals live outside the data folder. A plain ``<class>/<image>`` tree without ``metadata.csv`` is read
with labels by sorted folder name, as ``torchvision.datasets.ImageFolder`` does.

Design: docs/design.md#image-folders.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gandiff.artifacts import atomic_write_bytes, atomic_write_text
from gandiff.datasets.sample import ExportItem

SPLIT = "train"
METADATA = "metadata.csv"
# First columns, in this order; the rest follow sorted.
LEAD_COLUMNS = ("file_name", "label", "identity", "image_id")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _cell(v: Any) -> Any:
    return "" if v is None else v


def write_imagefolder(root: str | os.PathLike, items: Iterable[ExportItem],
                      originals_dir: str | os.PathLike | None = None) -> dict[str, int]:
    """Write ``items`` under ``root/train/``; originals (if any) under ``originals_dir``. Returns counts."""
    root = Path(root)
    split_dir = root / SPLIT
    rows: list[dict[str, Any]] = []
    labels: set[int] = set()
    for it in items:
        rel = f"{it.identity}/{it.image_id}.{it.ext}"
        atomic_write_bytes(split_dir / rel, it.image)
        row = {"file_name": rel, "label": int(it.label), "identity": it.identity, "image_id": it.image_id}
        if it.original is not None:
            if originals_dir is None:
                raise ValueError("write_imagefolder: items carry originals but no originals_dir was given")
            orig = Path(originals_dir) / it.identity / f"{it.image_id}.{it.original_ext}"
            atomic_write_bytes(orig, it.original)
            row["original_path"] = os.path.relpath(orig, root.parent).replace(os.sep, "/")
        for k, v in it.metadata.items():
            if k in row:
                raise ValueError(f"write_imagefolder: metadata key {k!r} clashes with a reserved column")
            row[k] = v
        rows.append(row)
        labels.add(int(it.label))
    columns = list(LEAD_COLUMNS) + sorted({k for r in rows for k in r} - set(LEAD_COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    w.writeheader()
    for r in rows:
        w.writerow({c: _cell(r.get(c)) for c in columns})
    atomic_write_text(split_dir / METADATA, buf.getvalue())
    return {"images": len(rows), "classes": len(labels)}


def find_metadata(root: Path) -> Path | None:
    """The metadata file of an imagefolder tree: ``root/metadata.csv`` or ``root/train/metadata.csv``."""
    for p in (root / METADATA, root / SPLIT / METADATA):
        if p.exists():
            return p
    return None


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """Rows of ``metadata.csv`` with ``label`` as int and empty cells as None; clear errors on a bad table."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "file_name" not in reader.fieldnames:
            raise ValueError(f"{path}: an imagefolder metadata table needs a 'file_name' column "
                             f"(found {reader.fieldnames})")
        rows = []
        for n, row in enumerate(reader, 2):
            out: dict[str, Any] = {k: (None if v == "" else v) for k, v in row.items()}
            if "label" in out and out["label"] is not None:
                try:
                    out["label"] = int(out["label"])
                except ValueError:
                    raise ValueError(f"{path}:{n}: label {out['label']!r} is not an integer") from None
            rows.append(out)
    return rows
