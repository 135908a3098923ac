"""Held-out split and pairs, sampling and resumable loading, augmentation, unreadable images, real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gandiff.recognition.augmentations import build_train_transform, sample_seed, seeded_call
from gandiff.recognition.datamodule import (
    ArrayFaces,
    FaceDataModule,
    FaceRecords,
    SeededSampler,
    UnreadableImageError,
)
from gandiff.recognition.heldout import build_pairs, split_heldout

# --------------------------------------------------------------------------------------------- held-out


def test_heldout_images_keeps_two_for_training_and_holds_two_out():
    labels = np.repeat(np.arange(5), [3, 4, 10, 20, 6])
    s = split_heldout(labels, "images", 0.25, seed=0)
    assert not set(s.train) & set(s.heldout) and len(s.train) + len(s.heldout) == len(labels)
    held = np.bincount(labels[s.heldout], minlength=5)
    assert held.tolist() == [0, 2, 2, 5, 2]  # <4 images: none; at least 2; round(0.25 n) otherwise
    assert (np.bincount(labels[s.train], minlength=5) >= 2).all()
    assert s.label_map == {i: i for i in range(5)}
    again = split_heldout(labels, "images", 0.25, seed=0)
    assert (again.heldout == s.heldout).all()


def test_heldout_identities_removes_them_from_training_and_renumbers():
    labels = np.repeat(np.arange(10), 3)
    s = split_heldout(labels, "identities", 0.2, seed=1)
    held_ids, train_ids = set(labels[s.heldout]), set(labels[s.train])
    assert len(held_ids) == 2 and not held_ids & train_ids and len(train_ids) == 8
    assert sorted(s.label_map) == sorted(train_ids) and sorted(s.label_map.values()) == list(range(8))


def test_pairs_are_balanced_correct_and_distinct():
    labels = np.repeat(np.arange(6), 5)
    pairs, issame = build_pairs(labels, 100, seed=0)
    assert len(pairs) == 100 and issame.sum() == 50
    assert ((labels[pairs[:, 0]] == labels[pairs[:, 1]]) == issame).all()
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 100
    assert 0 < issame[:50].sum() < 50  # shuffled: every fold of the protocol sees both kinds
    # Only 6 * C(5, 2) = 60 mated pairs exist: a larger request is capped, still balanced.
    pairs, issame = build_pairs(labels, 1000, seed=0)
    assert len(pairs) == 120 and issame.sum() == 60


def test_no_pairs_without_two_identities():
    pairs, issame = build_pairs(np.zeros(5, int), 100, 0)
    assert pairs.shape == (0, 2) and issame.shape == (0,)


# --------------------------------------------------------------------------------------------- sampling


def test_sampler_splits_ranks_evenly_and_disjointly():
    samplers = [SeededSampler(103, 8, seed=3, rank=r, world_size=3) for r in range(3)]
    parts = [[p for p, _ in s] for s in samplers]
    assert all(len(p) == 32 for p in parts)  # 103 // 24 = 4 batches of 8 on each rank
    assert not set(parts[0]) & set(parts[1]) and not set(parts[1]) & set(parts[2])
    samplers[0].set_epoch(1)
    assert [p for p, _ in samplers[0]] != parts[0]  # a new permutation each epoch
    assert {e for _, e in samplers[0]} == {1}


def test_loader_state_resumes_mid_epoch(faces):
    dm = FaceDataModule(faces, batch_size=8, heldout="none")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    full = [b["index"].tolist() for b in loader]
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    dm2 = FaceDataModule(faces, batch_size=8, heldout="none")
    loader2 = dm2.train_dataloader()
    loader2.load_state_dict(state)
    assert [b["index"].tolist() for b in loader2] == full[2:]
    loader2.sampler.set_epoch(3)  # the next epoch is whole again
    assert len(list(loader2)) == len(full)


# --------------------------------------------------------------------------------------------- augmentation


def test_augmentation_is_seeded_per_sample_and_keeps_uint8(faces):
    img = FaceRecords(faces).image(0)
    tr = build_train_transform(flip=True, crop_jitter=4, color_jitter=0.3, random_erasing=0.5, randaugment=True)
    a = seeded_call(tr, img, sample_seed(0, 1, 5))
    b = seeded_call(tr, img, sample_seed(0, 1, 5))
    c = seeded_call(tr, img, sample_seed(0, 2, 5))
    assert a.dtype == torch.uint8 and a.shape == (3, 112, 112)
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = torch.random.get_rng_state()
    seeded_call(tr, img, 1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    assert build_train_transform(flip=False) is None


# --------------------------------------------------------------------------------------------- bad data


class _Flaky(ArrayFaces):
    """Raises like the readers do (ImageDecodeError is a ValueError) for some indices."""

    def __init__(self, base: ArrayFaces, bad: set[int]):
        super().__init__(base.images, base.labels)
        self.bad = bad

    def __getitem__(self, i):
        if i in self.bad:
            raise ValueError(f"x.rec image {i}: not a readable image (broken data)")
        return super().__getitem__(i)


def test_unreadable_images_are_skipped_and_counted(faces):
    dm = FaceDataModule(_Flaky(faces, {5, 17, 30}), batch_size=8, heldout="none")
    batches = list(dm.train_dataloader())
    assert sum(b["skipped"] for b in batches) == 3
    assert sum(len(b["label"]) for b in batches) == len(batches) * 8 - 3
    assert any("image 17" in e for b in batches for e in b["skipped_examples"])


def test_all_unreadable_is_an_error(faces):
    dm = FaceDataModule(_Flaky(faces, set(range(8, len(faces)))), batch_size=8, heldout="none")
    with pytest.raises(UnreadableImageError, match="all 8 images of a batch are unreadable"):
        list(dm.train_dataloader())


def test_wrong_image_size_is_a_clear_error():
    ds = ArrayFaces(np.zeros((8, 64, 64, 3), np.uint8), np.arange(8) % 2)
    with pytest.raises(ValueError, match=r"64x64; recognizer backbones take aligned 112x112"):
        FaceDataModule(ds, batch_size=4, heldout="none").setup("fit")


# --------------------------------------------------------------------------------------------- real formats


def test_reads_a_recordio_export_through_open_dataset(tmp_path: Path, faces):
    from gandiff.datasets.readers import open_dataset
    from gandiff.datasets.recordio import write_recordio

    by_label = [[faces.images[i] for i in np.flatnonzero(faces.labels == c)] for c in range(faces.num_classes)]
    write_recordio(tmp_path / "rec", by_label)
    ds = open_dataset(tmp_path / "rec")
    dm = FaceDataModule(ds, batch_size=8, heldout="images", heldout_fraction=0.25, source=str(tmp_path / "rec"))
    dm.setup("fit")
    assert dm.num_classes == faces.num_classes and len(dm.val_sets) == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 112, 112)
    # PNG round trip: the pixels the module sees are the pixels written.
    i = int(batch["index"][0])
    lab = int(ds.labels[i])
    assert lab == int(batch["label"][0])
    img0 = batch["image"][0].permute(1, 2, 0).numpy()
    assert any(np.array_equal(img0, v) for im in by_label[lab] for v in (im, im[:, ::-1]))  # flip is on


def test_recordio_keys_missing_from_the_index_are_skipped_and_counted(tmp_path: Path, faces):
    """A train.idx that lacks some keys (the first image's among them): training skips and counts them."""
    from gandiff.datasets.readers import open_dataset
    from gandiff.datasets.recordio import write_recordio

    by_label = [[faces.images[i] for i in np.flatnonzero(faces.labels == c)] for c in range(faces.num_classes)]
    write_recordio(tmp_path / "rec", by_label)
    idx = tmp_path / "rec" / "train.idx"
    gone = {1, 18, 40}  # image keys are dataset index + 1
    idx.write_text("".join(ln for ln in idx.read_text().splitlines(keepends=True) if int(ln.split("\t")[0]) not in gone))
    dm = FaceDataModule(open_dataset(tmp_path / "rec"), batch_size=8, heldout="none", source="rec")
    batches = list(dm.train_dataloader())  # every image is in one of the 12 whole batches
    assert sum(b["skipped"] for b in batches) == 3
    assert sum(len(b["label"]) for b in batches) == len(faces) - 3
    assert any("no record with key 18" in e for b in batches for e in b["skipped_examples"])
