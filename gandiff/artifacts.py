"""Files between stages: atomic writes, per-item records, manifests, shards and fingerprints.

Every file a stage produces is written under a temporary name in the same folder and renamed into place,
so a reader (or a resumed run) sees either the whole file or nothing. A stage records each finished item
as a small JSON row under ``<stage_dir>/items/`` *after* the item's files are in place; the row lists
each file with its size and SHA-256, so an item whose files were truncated or edited afterwards is
detected and redone. The merge step turns the rows into one typed manifest table.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import secrets
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"
# Temporaries carry the writer's host and pid, so a cleanup removes only those whose writer is gone.
_HOST = hashlib.sha256(platform.node().encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    For writers that want a file name (``torch.save``, ``safetensors.save_file``, ``pq.write_table``).
    The temporary keeps the final suffix so that writers which pick a format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` with stable bytes, written atomically.

    ``torch.save`` to a file name names the zip archive inside after that name (a temporary name here, so two
    identical saves would differ); through a buffer the archive is always ``archive``, as Lightning saves.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and a fixed layout: equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable: {o!r}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, canonical_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); delete it to redo") from e


def save_image(path: str | os.PathLike, image: Any, format: str | None = None) -> Path:
    """Save a PIL image (or HxWxC uint8 RGB array) atomically. PNG metadata is left out so bytes are stable."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(path).suffix.lower(), "PNG")
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    image.save(buf, format=fmt, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def _writer_gone(tmp: Path, max_age_s: float) -> bool:
    """True when the process that was writing ``tmp`` has ended (or, on another host, long ago)."""
    try:
        host, pid = tmp.name.split(TMP_MARK, 1)[1].split("-")[:2]
        pid_n = int(pid)
    except (IndexError, ValueError):
        host, pid_n = "", -1
    if host == _HOST and pid_n > 0:
        try:
            os.kill(pid_n, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            pass
    # A live writer (or one on another host we cannot ask) holds a temporary for seconds, not an hour.
    return time.time() - tmp.stat().st_mtime > max_age_s


def remove_stale_tmp(root: str | os.PathLike, max_age_s: float = 3600.0) -> int:
    """Delete temporaries that killed writers left under ``root``; returns how many.

    Shards of one stage may run at once on a shared folder, so a temporary is removed only when its
    writer (host + pid in its name) is gone, or, for other hosts' files, after ``max_age_s``.
    """
    n = 0
    root = Path(root)
    if not root.exists():
        return 0
    for p in root.rglob(f".*{TMP_MARK}*"):
        try:
            if p.is_file() and _writer_gone(p, max_age_s):
                p.unlink(missing_ok=True)
                n += 1
        except FileNotFoundError:  # renamed into place by its writer meanwhile
            pass
    return n


# --------------------------------------------------------------------------------------------- digests


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_hash(obj: Any) -> str:
    """Hash of a plain (JSON-able) config: the same values give the same hash, whatever the key order."""
    return bytes_sha256(canonical_json(obj).encode("utf-8"))[:16]


# --------------------------------------------------------------------------------------------- shards


def shard_of(item_id: str, count: int) -> int:
    """The shard an id belongs to: a stable hash, so adding identities never moves existing ones."""
    return zlib.crc32(item_id.encode("utf-8")) % count


def select_shard(ids: Iterable[str], index: int, count: int) -> list[str]:
    """The ids that shard ``index`` of ``count`` owns, in input order. Shards partition the ids exactly."""
    if count < 1:
        raise ValueError(f"shard.count={count}: must be >= 1")
    if not 0 <= index < count:
        raise ValueError(f"shard.index={index}: must be in [0, {count - 1}] for shard.count={count}")
    return [i for i in ids if shard_of(i, count) == index]


def identity_id(n: int) -> str:
    """The stable string id of identity number ``n`` (``id_000042``); used from start to end."""
    return f"id_{n:06d}"


# --------------------------------------------------------------------------------------------- item records


def importable(module: str) -> bool:
    """Whether ``module`` can be found here, without importing it (a dotted name imports its parent packages)."""
    try:
        return importlib.util.find_spec(module) is not None
    except Exception:  # a missing or broken parent package, a module without __spec__: not importable
        return False


class ItemStore:
    """Done-markers with content: one JSON row per finished item, written after the item's files.

    ``put`` records the size and SHA-256 of every file the item produced (paths relative to the stage
    folder). ``is_done`` re-checks them, so a truncated, deleted or edited file makes the item undone and
    the stage redoes it; so does a record whose ``retry_when_installed`` package imports now (a part of it was
    skipped for its absence). Rows must be deterministic (no timings), so that a resumed run and an
    uninterrupted run end with the same bytes.
    """

    def __init__(self, stage_dir: str | os.PathLike, verify: str = "sha256", readonly: bool = False):
        if verify not in ("sha256", "size"):
            raise ValueError(f"verify={verify!r}: must be 'sha256' or 'size'")
        self.stage_dir = Path(stage_dir)
        self.dir = self.stage_dir / "items"
        self.verify = verify
        self.readonly = readonly  # a DDP follower's view: ``put`` records nothing (the leader records)

    def _row_path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"item key {key!r}: must be a non-empty file-name-safe string")
        return self.dir / f"{key}.json"

    def put(self, key: str, row: dict[str, Any], files: Sequence[str | os.PathLike] = (),
            retry_when_installed: Sequence[str] = ()) -> None:
        """Record item ``key``. ``retry_when_installed``: the optional packages whose absence made part of the row a
        skip; once any of them can be imported, the item counts as not done and is redone."""
        if self.readonly:
            return
        recs = []
        for f in files:
            p = Path(f)
            if not p.is_absolute():
                p = self.stage_dir / p
            rel = p.relative_to(self.stage_dir).as_posix()
            recs.append({"path": rel, "size": p.stat().st_size, "sha256": file_sha256(p)})
        rec: dict[str, Any] = {"key": key, "row": row, "files": recs}
        if retry_when_installed:
            rec["retry_when_installed"] = sorted(set(retry_when_installed))
        atomic_write_json(self._row_path(key), rec)

    def record(self, key: str) -> dict[str, Any] | None:
        p = self._row_path(key)
        if not p.exists():
            return None
        try:
            return read_json(p)
        except ValueError:
            return None

    def is_done(self, key: str) -> bool:
        rec = self.record(key)
        if rec is None:
            return False
        if any(importable(m) for m in rec.get("retry_when_installed", ())):
            return False  # skipped for a package that is installed now
        for f in rec.get("files", []):
            p = self.stage_dir / f["path"]
            if not p.exists() or p.stat().st_size != f["size"]:
                return False
            if self.verify == "sha256" and file_sha256(p) != f["sha256"]:
                return False
        return True

    def get(self, key: str) -> dict[str, Any]:
        rec = self.record(key)
        if rec is None:
            raise KeyError(f"{self._row_path(key)}: item {key!r} has no record")
        return rec["row"]

    def keys(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def pending(self, keys: Iterable[str]) -> list[str]:
        """The keys that are not done (missing, or whose files no longer match their record)."""
        return [k for k in keys if not self.is_done(k)]

    def unrecorded(self, keys: Iterable[str]) -> list[str]:
        """The keys with no record at all (cheap: no file is read). ``pending`` also re-checks files."""
        return [k for k in keys if not self._row_path(k).exists()]

    def rows(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return [self.get(k) for k in (self.keys() if keys is None else keys)]

    def files_digest(self, keys: Iterable[str]) -> str:
        """One digest over the records of ``keys``: the stage's output fingerprint."""
        h = hashlib.sha256()
        for k in keys:
            h.update(self._row_path(k).read_bytes())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- tables


def write_table(path: str | os.PathLike, rows: Sequence[dict[str, Any]], schema: Any = None) -> Path:
    """Write a manifest: Parquet for ``.parquet`` (typed columns), JSON lines for ``.jsonl``.

    ``schema`` (a ``pyarrow.Schema``) fixes the column types; without it pyarrow infers them, which is
    fine for non-empty tables of scalars and lists. Nested dicts become structs.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
        return atomic_write_text(path, text)
    if path.suffix != ".parquet":
        raise ValueError(f"{path}: manifest must end in .parquet or .jsonl")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows), schema=schema) if (rows or schema is not None) else pa.table({})
    with atomic_path(path) as tmp:
        # No statistics / created_by drift: the same rows give the same bytes.
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    return path


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found (has the stage that writes it run?)")
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
        return out
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
