"""WebDataset tar shards: ``<key>.png`` (or ``.jpg``) + ``<key>.cls`` + ``<key>.json`` per sample.

The ``webdataset`` package groups tar members by the part of the file name before the first dot, and
decodes by extension: ``.cls`` is the integer label as ASCII, ``.json`` a UTF-8 JSON object (identity id,
image id and the metadata), ``.png``/``.jpg`` the image. Originals, when exported, are ``<key>.orig.png``.
Members are written in sample order, each with mtime 0, uid/gid 0 and mode 0644, so the same samples
give the same bytes; shards are ``shard-000000.tar``, ``shard-000001.tar``, ... of ``shard_size`` samples.
Keys are ``<label:06d>_<image_id>`` with dots replaced, so they sort by label and never contain a dot.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gandiff.artifacts import atomic_path
from gandiff.datasets.sample import ExportItem

SHARD_PATTERN = "shard-{:06d}.tar"


def sample_key(label: int, image_id: str) -> str:
    return f"{label:06d}_{image_id}".replace(".", "_")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(out_dir: str | os.PathLike, items: Iterable[ExportItem], shard_size: int = 1000) -> dict[str, Any]:
    """Write ``items`` as tar shards in ``out_dir``; returns counts and the shard file names."""
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}: must be >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards: list[str] = []
    n = 0
    labels: set[int] = set()
    tar: tarfile.TarFile | None = None
    ctx = None
    try:
        for it in items:
            if n % shard_size == 0:
                if tar is not None:
                    tar.close()
                    ctx.__exit__(None, None, None)
                name = SHARD_PATTERN.format(len(shards))
                ctx = atomic_path(out_dir / name)
                tar = tarfile.open(ctx.__enter__(), "w", format=tarfile.USTAR_FORMAT)
                shards.append(name)
            key = sample_key(it.label, it.image_id)
            meta = {"identity": it.identity, "image_id": it.image_id, "label": int(it.label), **it.metadata}
            _add(tar, f"{key}.{it.ext}", it.image)
            _add(tar, f"{key}.cls", str(int(it.label)).encode("ascii"))
            _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            if it.original is not None:
                _add(tar, f"{key}.orig.{it.original_ext}", it.original)
            labels.add(int(it.label))
            n += 1
        if tar is not None:
            tar.close()
            ctx.__exit__(None, None, None)
            tar = None
    finally:
        if tar is not None:  # an exception mid-shard: drop the temporary
            tar.close()
            ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
    return {"images": n, "classes": len(labels), "shards": shards}


def index_tar(path: Path) -> list[dict[str, Any]]:
    """Random access into a shard: one entry per sample, with the byte offsets and sizes of its members."""
    samples: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            base = m.name.rsplit("/", 1)[-1]
            key, dot, ext = base.partition(".")
            if not dot:
                continue
            prefix = m.name[: len(m.name) - len(base)]
            full_key = prefix + key
            if full_key not in samples:
                samples[full_key] = {"key": full_key, "members": {}}
                order.append(full_key)
            samples[full_key]["members"][ext.lower()] = (m.offset_data, m.size)
    return [samples[k] for k in order]
