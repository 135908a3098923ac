"""imagefolder (through Hugging Face datasets), WebDataset (through webdataset) and the one reader API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gandiff.datasets.imagefolder import write_imagefolder
from gandiff.datasets.readers import EmptyDatasetError, open_dataset
from gandiff.datasets.sample import ExportItem, encode_image
from gandiff.datasets.webdataset import write_webdataset


@pytest.fixture
def items():
    """7 images of 3 identities; pixel colour encodes the label so a label mix-up is visible."""
    out = []
    for label, n in enumerate((3, 2, 2)):
        for k in range(n):
            img = np.zeros((112, 112, 3), np.uint8)
            img[..., label] = 200  # label 0 red, 1 green, 2 blue
            img[0, 0] = (k, k, k)
            out.append(ExportItem(label=label, identity=f"id_{label * 7:06d}", image_id=f"id_{label * 7:06d}_{k:04d}",
                                  image=encode_image(img, "png"), ext="png",
                                  metadata={"gender": ("male", "female")[label % 2], "anchor_sim": 0.5 + label / 10,
                                            "race": None, "fam_expression": "smiling" if k else ""}))
    return out


def test_imagefolder_loads_through_hf_datasets_with_right_labels(tmp_path, items, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_imagefolder(tmp_path / "imagefolder", items)
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "imagefolder"),
                               cache_dir=str(tmp_path / "cache"))["train"]
    assert ds.num_rows == len(items)
    by_id = {r["image_id"]: r for r in ds}
    for it in items:
        row = by_id[it.image_id]
        assert row["label"] == it.label and row["identity"] == it.identity
        pix = np.asarray(row["image"].convert("RGB"))
        assert pix[5, 5, it.label] == 200 and pix[5, 5].sum() == 200  # right colour, RGB order
    assert by_id[items[0].image_id]["gender"] == "male"


def test_webdataset_readable_by_webdataset_package(tmp_path, items):
    wds = pytest.importorskip("webdataset")
    info = write_webdataset(tmp_path, items, shard_size=3)
    assert info["shards"] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    urls = [str(tmp_path / s) for s in info["shards"]]
    got = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert [s["cls"] for s in got] == [it.label for it in items]
    for s, it in zip(got, items):
        assert s["json"]["identity"] == it.identity
        assert s["png"][5, 5, it.label] == 200


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_reader_round_trip_is_exact(tmp_path, items, fmt):
    if fmt == "imagefolder":
        write_imagefolder(tmp_path / fmt, items)
    else:
        write_webdataset(tmp_path / fmt, items, shard_size=4)
    ds = open_dataset(tmp_path / fmt)
    assert ds.format == fmt and len(ds) == len(items) and ds.num_classes == 3
    assert ds.identities == ["id_000000", "id_000007", "id_000014"]
    for i, it in enumerate(items):
        assert ds.read_bytes(i) == it.image
        s = ds[i]
        assert s.label == it.label and s.identity == it.identity
        assert s.metadata["anchor_sim"] == pytest.approx(it.metadata["anchor_sim"])
    assert ds.identity_attributes["id_000007"]["gender"] == "female"


def test_plain_class_tree_labels_by_sorted_folder(tmp_path):
    from PIL import Image

    for name, colour in (("zeta", 0), ("alpha", 2)):
        (tmp_path / name).mkdir()
        img = np.zeros((16, 16, 3), np.uint8)
        img[..., colour] = 255
        Image.fromarray(img).save(tmp_path / name / "a.jpg")
    ds = open_dataset(tmp_path)
    assert ds.identities == ["alpha", "zeta"]
    assert ds[0].label == 0 and ds[0].image[8, 8, 2] > 200


def test_empty_export_and_unknown_paths_are_clear(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"empty": True, "reason": "0 of 12 images selected"}))
    with pytest.raises(EmptyDatasetError, match="0 of 12 images selected"):
        open_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="no dataset found"):
        open_dataset(tmp_path / "other")
