"""Fixtures: fake upstream stage folders in their real formats (identities, curate, export, train)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


def _face_like(rng, colour, size):
    img = np.clip(rng.normal(colour, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
    return img


def make_identities(folder: Path, n_ids: int = 6, per_id: int = 4, seed: int = 0) -> Path:
    """``identities.parquet`` + ``images/<id>/anchor.png, var_XX.png`` (64x64, no detectable face)."""
    from gandiff.artifacts import save_image, write_table

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_ids):
        ident = f"id_{i:06d}"
        colour = rng.uniform(40, 215, size=3)
        for j in range(per_id):
            name = "anchor.png" if j == 0 else f"var_{j - 1:02d}.png"
            save_image(folder / "images" / ident / name, _face_like(rng, colour, 64))
        rows.append({"id": ident, "gender": ["female", "male"][i % 2], "age_bin": ["20-29", "30-39", "40-49"][i % 3]})
    write_table(folder / "identities.parquet", rows)
    return folder


def make_export(folder: Path, n_ids: int = 5, per_id: int = 3, seed: int = 1, empty: bool = False) -> Path:
    """A gandiff export root: ``dataset.json`` and ``imagefolder/train/metadata.csv`` + 112x112 PNGs."""
    from gandiff.artifacts import save_image

    folder.mkdir(parents=True, exist_ok=True)
    if empty:
        (folder / "dataset.json").write_text(json.dumps({"empty": True, "reason": "curation selected no image"}))
        return folder
    (folder / "dataset.json").write_text(json.dumps({"empty": False, "formats": ["imagefolder"]}))
    rng = np.random.default_rng(seed)
    root = folder / "imagefolder" / "train"
    rows = []
    for i in range(n_ids):
        ident = f"id_{i:06d}"
        colour = rng.uniform(40, 215, size=3)
        for j in range(per_id):
            rel = f"{ident}/{j:03d}.png"
            save_image(root / rel, _face_like(rng, colour, 112))
            rows.append({"file_name": rel, "label": i, "identity": ident, "image_id": f"{j:03d}",
                         "gender": ["female", "male"][i % 2], "age_bin": "20-29"})
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def make_curate(folder: Path, n_ids: int = 6, per_id: int = 4, dim: int = 128, seed: int = 2,
                 faces: bool = True) -> Path:
    """The curate stage's merge outputs: ``scores.parquet`` (one row per generated image in (id, image_id) order,
    ``status`` ok / no_face / unreadable, ``embedding_row``) and ``embeddings.npy`` (zero rows where no face).

    Every identity's last image has no face and the last identity has none at all (``faces=False``: no image
    has one), so ``n_ids - 1`` identities with ``per_id - 1`` faces each are measurable."""
    from gandiff.artifacts import write_table

    rng = np.random.default_rng(seed)
    rows, embs = [], []
    for i in range(n_ids):
        ident = f"id_{i:06d}"
        centre = rng.normal(size=dim)
        for j in range(per_id):
            has_face = faces and i < n_ids - 1 and j < per_id - 1
            status = "ok" if has_face else ("unreadable" if j == per_id - 1 and i == 0 else "no_face")
            rows.append({"id": ident, "image_id": f"{j:03d}", "path": f"images/{ident}/{j:03d}.png", "status": status,
                         "crop": f"crops/{ident}/{j:03d}.png" if has_face else "", "anchor_sim": 0.5 if has_face else None,
                         "embedding_row": len(rows)})
            e = centre + rng.normal(scale=0.8, size=dim) if has_face else np.zeros(dim)
            embs.append(e / max(np.linalg.norm(e), 1e-12) if has_face else e)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", np.asarray(embs, np.float32))
    write_table(folder / "scores.parquet", rows)
    return folder


def make_onnx_recognizer(path: Path, dim: int = 16, seed: int = 0) -> Path:
    """A tiny insightface-layout recognizer: (N, 3, 112, 112) float -> (N, dim) (4x4 average pool + linear)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3 * 4 * 4, dim)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", dim])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_train(folder: Path, with_model: bool = True) -> Path:
    from gandiff.evaluation.verification import write_bin

    folder.mkdir(parents=True, exist_ok=True)
    if not with_model:
        (folder / "metrics.json").write_text(json.dumps({"status": "skipped", "reason": "the export is empty"}))
        return folder
    make_onnx_recognizer(folder / "backbone.onnx")
    rng = np.random.default_rng(3)
    colours = rng.uniform(30, 220, size=(10, 3))
    imgs, issame = [], []
    for p in range(40):
        a = p % 10
        b = a if p % 2 == 0 else (a + 1 + p % 7) % 10
        imgs += [_face_like(rng, colours[a], 112), _face_like(rng, colours[b], 112)]
        issame.append(a == b)
    write_bin(folder / "heldout.bin", imgs, issame)
    (folder / "metrics.json").write_text(json.dumps({"status": "ok"}))
    return folder


@pytest.fixture
def upstream(tmp_path):
    """(identities, export, train) folders of a small run."""
    return (make_identities(tmp_path / "identities"), make_export(tmp_path / "export"), make_train(tmp_path / "train"))


@pytest.fixture
def curate(tmp_path):
    """The curate folder of the same run (scores of every generated image, before selection)."""
    return make_curate(tmp_path / "curate")


@pytest.fixture
def builders():
    """The folder builders above, for tests that need other sizes (tests/ is not a package)."""
    from types import SimpleNamespace

    return SimpleNamespace(identities=make_identities, export=make_export, train=make_train, curate=make_curate,
                           onnx_recognizer=make_onnx_recognizer)
