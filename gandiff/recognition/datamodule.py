"""Data for recognizer training: any exported dataset in, uint8 face batches out.

The dataset comes from ``gandiff.datasets.readers.open_dataset`` (every export format, and real datasets in
the same formats) or anything with its interface (``FaceRecords`` is the adapter). Batches stay uint8 until
the device (4x less traffic than float32). ``SeededSampler`` orders by (seed, epoch), splits across DDP ranks
and resumes mid-epoch through the loader's ``state_dict``, so a resumed run sees exactly the batches an
uninterrupted one sees. Unreadable images are skipped and counted per batch.

Design: docs/design.md#the-data-module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gandiff.datasets.recordio import RecordIOError
from gandiff.errors import UserError
from gandiff.recognition.augmentations import Transform, build_train_transform, sample_seed, seeded_call
from gandiff.recognition.heldout import HeldoutSplit, build_pairs, split_heldout

log = logging.getLogger(__name__)

IMAGE_SIZE = 112
MIN_PAIRS = 20  # fewer pairs than this make the 10-fold protocol meaningless


class UnreadableImageError(RuntimeError):
    """Every image of a batch failed to decode: the reader, not the data, is probably at fault."""


class TooFewImagesError(UserError, ValueError):
    """The training split holds less than one global batch (the train stage skips, or stops, saying so)."""


# --------------------------------------------------------------------------------------------- adapter


class FaceRecords:
    """Thin adapter over an ``open_dataset`` result (or anything with the same interface)."""

    def __init__(self, dataset: Any, source: str = ""):
        self.dataset = dataset
        self.source = source or type(dataset).__name__
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_classes(self) -> int:
        n = getattr(self.dataset, "num_classes", None)
        return int(n) if n is not None else (int(self.labels.max()) + 1 if len(self) else 0)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels. Read from ``ds.labels``/``ds.targets`` when the reader has them (no decoding)."""
        if self._labels is None:
            found = getattr(self.dataset, "labels", None)
            if found is None:
                found = getattr(self.dataset, "targets", None)
            if found is None:
                log.warning("%s has no .labels: decoding every item once to read its label", self.source)
                found = [self._split(self.dataset[i], i)[1] for i in range(len(self))]
            self._labels = np.asarray(found, dtype=np.int64).reshape(-1)
            if len(self._labels) != len(self):
                raise ValueError(f"{self.source}: {len(self._labels)} labels for {len(self)} items")
        return self._labels

    def _split(self, item: Any, index: int) -> tuple[Any, int]:
        if isinstance(item, dict):
            if "image" not in item or "label" not in item:
                raise ValueError(f"{self.source}[{index}]: item has keys {sorted(item)}; expected 'image' and 'label'")
            return item["image"], int(item["label"])
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], int(item[1])
        if hasattr(item, "image") and hasattr(item, "label"):  # gandiff.datasets.sample.Sample
            return item.image, int(item.label)
        raise ValueError(f"{self.source}[{index}]: item of type {type(item).__name__}; expected a Sample, a "
                         "mapping with 'image' and 'label' or a tuple (image, label, ...)")

    def image(self, index: int) -> torch.Tensor:
        """Item ``index``'s image as a uint8 tensor (3, 112, 112), RGB. Raises on unreadable data."""
        img, _ = self._split(self.dataset[index], index)
        return image_tensor(img, f"{self.source}[{index}]")


def image_tensor(img: Any, where: str) -> torch.Tensor:
    """RGB uint8 (H, W, 3) array or PIL image -> uint8 tensor (3, H, W); checks the aligned 112x112 size."""
    if img is None:
        raise ValueError(f"{where}: no image (the reader could not decode it)")
    if not isinstance(img, (np.ndarray, torch.Tensor)):
        img = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
    if isinstance(img, np.ndarray):
        img = np.ascontiguousarray(img)
        t = torch.from_numpy(img if img.flags.writeable else img.copy())  # decoded images may be read-only
    else:
        t = img
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"{where}: image of shape {tuple(t.shape)}; expected (112, 112, 3) RGB")
    if tuple(t.shape[:2]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{where}: image is {t.shape[0]}x{t.shape[1]}; recognizer backbones take aligned "
                         f"112x112 faces (export with export.image_size=112)")
    if t.dtype != torch.uint8:
        raise ValueError(f"{where}: image dtype {t.dtype}; expected uint8")
    return t.permute(2, 0, 1).contiguous()


class ArrayFaces:
    """An in-memory dataset with the reader interface: images (N, 112, 112, 3) uint8 RGB, labels (N,)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": int(self.labels[i])}


# --------------------------------------------------------------------------------------------- datasets


class TrainFaces(Dataset):
    """Training view: dataset indices, remapped labels, seeded augmentation; ``None`` for unreadable items.

    Indexed by ``(index, epoch)`` tuples from ``SeededSampler``: the epoch seeds the augmentation.
    """

    def __init__(self, records: FaceRecords, indices: np.ndarray, label_map: dict[int, int],
                 transform: Transform | None, seed: int):
        self.records, self.indices, self.transform, self.seed = records, np.asarray(indices), transform, seed
        labels = records.labels[self.indices]
        self.labels = np.asarray([label_map[int(y)] for y in labels], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any] | None:
        pos, epoch = key
        index = int(self.indices[pos])
        try:
            img = self.records.image(index)
        except (OSError, ValueError, EOFError, SyntaxError, RuntimeError) as e:
            # Unreadable or malformed item: skipped here, counted by the collate function.
            log.debug("skipping %s[%d]: %s", self.records.source, index, e)
            return {"error": f"{self.records.source}[{index}]: {e}", "index": index}
        if self.transform is not None:
            img = seeded_call(self.transform, img, sample_seed(self.seed, epoch, index))
        return {"image": img, "label": int(self.labels[pos]), "index": index}


def collate_faces(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable items; ``skipped`` counts the others (a plain int: no device sync to read it)."""
    good = [it for it in items if "error" not in it]
    if not good:
        raise UnreadableImageError(
            f"all {len(items)} images of a batch are unreadable, e.g. {items[0]['error']}: check the reader "
            "and the dataset files")
    return {
        "image": torch.stack([it["image"] for it in good]),  # (B, 3, 112, 112) uint8
        "label": torch.tensor([it["label"] for it in good], dtype=torch.long),  # (B,)
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),  # (B,) dataset indices
        "skipped": len(items) - len(good),
        "skipped_examples": [it["error"] for it in items if "error" in it][:3],
    }


class PairFaces(Dataset):
    """A verification set: unique images, and pairs over them.

    ``pair_index`` (2P,) maps pair order (pair p = entries 2p, 2p+1, the ``.bin`` convention) to image
    positions, so an image in many pairs is embedded once. Images come from an in-memory array
    (``.bin``) or from dataset records at ``indices`` (the held-out set).
    """

    def __init__(self, name: str, issame: np.ndarray, pair_index: np.ndarray, images: np.ndarray | None = None,
                 records: FaceRecords | None = None, indices: np.ndarray | None = None):
        if (images is None) == (records is None):
            raise ValueError("PairFaces needs either images or records + indices")
        self.name, self.issame = name, np.asarray(issame, bool)
        self.pair_index = np.asarray(pair_index, np.int64)
        self.images, self.records, self.indices = images, records, indices
        n = len(images) if images is not None else len(indices)
        if len(self.pair_index) != 2 * len(self.issame):
            raise ValueError(f"verification set {name!r}: {len(self.pair_index)} pair entries for "
                             f"{len(self.issame)} pairs (need 2 per pair)")
        if len(self.pair_index) and (self.pair_index.min() < 0 or self.pair_index.max() >= n):
            raise ValueError(f"verification set {name!r}: pair index out of range for {n} images")
        self.num_images = n

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.images is not None:
            return image_tensor(self.images[i], f"{self.name}[{i}]")
        return self.records.image(int(self.indices[i]))


# --------------------------------------------------------------------------------------------- sampling


class SeededSampler(Sampler):
    """Yields ``(position, epoch)`` for this rank: a permutation seeded by ``(seed, epoch)``, cut to whole
    batches on every rank (each rank gets the same number of batches, so DDP never waits on a short rank),
    strided across ranks. ``skip_batches`` resumes mid-epoch; it applies to the current epoch only."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.skip_batches = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.skip_batches = epoch, 0

    def __len__(self) -> int:
        # The whole epoch, also when resuming mid-epoch: Lightning reads the length once per fit as the number
        # of batches of *every* epoch, so a shortened length would cut all later epochs short after a resume.
        # The resumed epoch still ends on time: Lightning counts its restored batches towards that length.
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:used][self.rank::self.world_size]
        epoch = self.epoch
        for pos in mine[self.skip_batches * self.batch_size:].tolist():
            yield pos, epoch


class ResumableLoader(DataLoader):
    """A DataLoader Lightning treats as stateful: its ``state_dict`` (the epoch and the batches handed out
    in it) is saved in checkpoints and given back before iteration on resume.

    Lightning does not prefetch from a loader with a length, so batches handed out == batches trained on.
    """

    def __init__(self, dataset: TrainFaces, sampler: SeededSampler, **kwargs: Any):
        super().__init__(dataset, sampler=sampler, batch_size=sampler.batch_size, drop_last=True,
                         collate_fn=collate_faces, **kwargs)
        self._handed_out = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sampler: SeededSampler = self.sampler
        self._handed_out = sampler.skip_batches
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._handed_out)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: SeededSampler = self.sampler
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= sampler.batches_per_epoch:  # saved at the end of an epoch: start the next one
            epoch, batches = epoch + 1, 0
        sampler.epoch, sampler.skip_batches = epoch, batches
        self._handed_out = batches


# --------------------------------------------------------------------------------------------- data module


class FaceDataModule(L.LightningDataModule):
    """Training and validation data from one dataset (plus optional verification ``.bin`` files).

    ``val_sets`` (built in ``setup``): ``[PairFaces]``, the held-out set first (named ``heldout``), then
    one per ``.bin`` in ``val_bins`` order. ``num_classes`` is the number of training identities.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int = 0, num_workers: int = 0,
                 augment: dict[str, Any] | None = None, heldout: str = "images", heldout_fraction: float = 0.1,
                 heldout_pairs: int = 2000, val_bins: dict[str, str] | None = None, val_batch_size: int = 256,
                 source: str = ""):
        super().__init__()
        self.records = dataset if isinstance(dataset, FaceRecords) else FaceRecords(dataset, source)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.augment = dict(augment or {})
        self.heldout, self.heldout_fraction, self.heldout_pairs = heldout, heldout_fraction, heldout_pairs
        self.val_bins = dict(val_bins or {})
        self.val_batch_size = val_batch_size
        self.split: HeldoutSplit | None = None
        self.val_sets: list[PairFaces] = []
        self._train_loader: ResumableLoader | None = None

    # ------------------------------------------------------------------ setup
    def prepare_split(self) -> HeldoutSplit:
        """The train / held-out split and the pairs (deterministic in ``seed``); idempotent."""
        if self.split is not None:
            return self.split
        labels = self.records.labels
        self.split = split_heldout(labels, self.heldout, self.heldout_fraction, self.seed)
        self.val_sets = []
        if len(self.split.heldout):
            held = self.split.heldout
            pairs, issame = build_pairs(labels[held], self.heldout_pairs, self.seed + 1)
            if len(pairs) >= MIN_PAIRS:
                self.val_sets.append(PairFaces("heldout", issame, pairs.reshape(-1), records=self.records,
                                               indices=held))
            elif len(pairs):
                log.warning("only %d held-out pairs (< %d): no held-out validation; raise "
                            "trainer.heldout_fraction or use more images per identity", len(pairs), MIN_PAIRS)
        self._check_images(self.split.train[:8])
        if self.heldout != "none" and not self.val_sets:
            log.warning("no held-out verification pairs: the dataset has too few images per identity "
                        "(images mode needs identities with >= 4 images; identities mode >= 4 identities)")
        for name, path in self.val_bins.items():
            from gandiff.evaluation.verification import load_bin  # the evaluation package's reader

            images, issame_bin = load_bin(path)
            self.val_sets.append(PairFaces(name, issame_bin, np.arange(len(images)), images=images))
        return self.split

    def _check_images(self, indices: np.ndarray) -> None:
        """Fail fast on a dataset of the wrong size or layout (training would skip every image)."""
        errors = []
        for i in indices.tolist():
            try:
                self.records.image(int(i))
                return
            except (OSError, EOFError, SyntaxError, RecordIOError) as e:  # unreadable item: try the next one
                errors.append(str(e))
        if errors:
            raise UnreadableImageError(f"the first {len(errors)} training images are unreadable, e.g. {errors[0]}")

    @property
    def num_classes(self) -> int:
        return self.prepare_split().num_classes

    def setup(self, stage: str | None = None) -> None:
        self.prepare_split()

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    # ------------------------------------------------------------------ loaders
    def train_dataset(self) -> TrainFaces:
        split = self.prepare_split()
        transform = build_train_transform(**self.augment)
        return TrainFaces(self.records, split.train, split.label_map, transform, self.seed)

    def train_dataloader(self) -> ResumableLoader:
        if self._train_loader is None:
            ds = self.train_dataset()
            rank, world = self._rank_world()
            if len(ds) < self.batch_size * world:
                raise TooFewImagesError(
                    f"{self.records.source}: {len(ds)} training images, fewer than one batch "
                    f"(trainer.batch_size={self.batch_size} x {world} devices): lower trainer.batch_size")
            sampler = SeededSampler(len(ds), self.batch_size, self.seed, rank, world)
            self._train_loader = ResumableLoader(ds, sampler, **self._worker_kwargs(self.num_workers))
        return self._train_loader

    def val_dataloader(self) -> list[DataLoader]:
        self.prepare_split()
        # No distributed sampler: every rank embeds every pair, so each computes the same metric.
        return [DataLoader(v, batch_size=self.val_batch_size, shuffle=False,
                           **self._worker_kwargs(min(self.num_workers, 4))) for v in self.val_sets]

    @staticmethod
    def _worker_kwargs(n: int) -> dict[str, Any]:
        if n <= 0:
            return {"num_workers": 0}
        return {"num_workers": n, "persistent_workers": True, "pin_memory": torch.cuda.is_available(),
                "prefetch_factor": 4}

    @property
    def steps_per_epoch(self) -> int:
        _, world = self._rank_world()
        return math.floor(len(self.prepare_split().train) / (self.batch_size * world))
