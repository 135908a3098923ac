"""The diffusion-backend protocol: how a text-to-image model learns identities and renders them.

The ``dreambooth`` and ``generate`` stages talk to a backend only, built from ``dreambooth.backend``
(``_target_`` plus the backend's own arguments). Stable Diffusion with DreamBooth
(:class:`gandiff.diffusion.sd_backend.StableDiffusionBackend`) is the first; a backend that needs no
per-identity training (an identity-conditioned generator) makes its "adapter" the identity's
conditioning in ``train_group``. Paths, images and losses cross the protocol; models stay inside.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# The schema's default of dreambooth.backend (gandiff/diffusion/schema.py).
DEFAULT_BACKEND = {"_target_": "gandiff.diffusion.sd_backend.StableDiffusionBackend"}


@dataclasses.dataclass(frozen=True)
class TrainIdentity:
    """One identity to learn: its images (anchor first), its instance prompt and class noun, its own seed."""

    id: str
    images: tuple[Path, ...]
    prompt: str  # e.g. "a photo of sks woman"
    noun: str  # its class noun, e.g. "woman"
    seed: int  # every random draw of its training comes from this seed


@dataclasses.dataclass(frozen=True)
class SavedAdapter:
    """What ``save_adapter`` wrote for one identity, and the backend's columns of ``adapters.parquet``."""

    weights: Path  # the adapter's main file: its SHA-256 names the adapter downstream
    extra: tuple[Path, ...]  # its other files (recorded with the item, so a damaged one is redone)
    mode: str  # the kind of adapter: lora | full (Stable Diffusion) | the backend's own name
    class_prompt: str  # the prior-preservation prompt it trained with ("" for none)
    rank: int  # LoRA rank (0: not a LoRA)
    steps: int  # training steps (0: nothing trained)


@dataclasses.dataclass(frozen=True)
class Adapter:
    """One identity's adapter as the generate stage hands it back to the backend."""

    id: str
    mode: str
    path: Path  # SavedAdapter.weights, as written


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    """One image to render: its prompts, its seed, and its adapter slot (-1: the base model)."""

    prompt: str
    negative: str
    seed: int
    adapter: int = -1


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How to sample (``generation.*``): the scheduler name, its steps, the guidance scale, the image size."""

    scheduler: str
    steps: int
    guidance: float
    resolution: int


@runtime_checkable
class TrainedGroup(Protocol):
    losses: np.ndarray  # (steps, K) each identity's loss per step; (0, K) when nothing is trained


@runtime_checkable
class DiffusionBackend(Protocol):
    """Built as ``Backend(settings=<DreamBoothConfig>, seed=<run seed>, cache_dir=<models folder>,
    face_detector=<factory or None>, **its own arguments from dreambooth.backend)``; ``face_detector()`` gives
    the configured face detector, for backends that place face crops (the identity loss)."""

    dtype: str  # the dtype the loaded model computes in ("float32" ...); written to the images manifest

    def load(self, dtype: str, device: str) -> None:
        """Load the base model's components (once per process); problems raise one clear StageError."""
        ...

    def training_group_size(self) -> int:
        """How many identities train together (a fixed chunk of the shard's identity list)."""
        ...

    def train_group(
        self, identities: Sequence[TrainIdentity], work_dir: Path
    ) -> contextlib.AbstractContextManager[TrainedGroup]:
        """Train a group; the context holds what ``save_adapter`` needs. Shared files go under ``work_dir``."""
        ...

    def save_adapter(self, trained: TrainedGroup, index: int, folder: Path) -> SavedAdapter:
        """Write identity ``index`` of the group to ``folder``: atomically, the same bytes for the same training."""
        ...

    def render_group_size(self, modes: set[str], requested: int) -> int:
        """How many identities render together, given their adapters' modes and what the config asks."""
        ...

    def adapters(self, group: Sequence[Adapter]) -> contextlib.AbstractContextManager[None]:
        """Load a group's adapters (slot i = group[i]) for the ``render`` calls inside the context."""
        ...

    def render(self, specs: Sequence[RenderSpec], sampler: Sampler) -> list[Any]:
        """One batch, each image through its spec's adapter slot; PIL images in the order of ``specs``."""
        ...


def build_backend(
    node: Any, settings: Any, seed: int, cache_dir: Path, face_detector: Callable[[], Any] | None = None
) -> DiffusionBackend:
    """The backend ``dreambooth.backend`` names, given the typed DreamBooth settings.

    ``_partial_`` keeps Hydra from turning ``settings`` (a dataclass) into a config node.
    """
    from hydra.utils import instantiate

    from gandiff.pipeline import StageError

    target = node.get("_target_") if hasattr(node, "get") else None
    try:
        make = instantiate(node, _partial_=True)
    except Exception as e:  # noqa: BLE001  (Hydra wraps the target's own import error)
        raise StageError(f"dreambooth.backend._target_={target!r} could not be imported: {e}") from e
    backend = make(settings=settings, seed=int(seed), cache_dir=Path(cache_dir), face_detector=face_detector)
    if not isinstance(backend, DiffusionBackend):
        raise StageError(f"dreambooth.backend._target_={target!r}: gives a {type(backend).__name__}, not a "
                         "DiffusionBackend (gandiff/diffusion/backend.py lists the methods it needs)")
    return backend


def backend_is_default(node: Any) -> bool:
    """Whether ``dreambooth.backend`` is the schema's default (then it is not part of the stage keys, so
    folders made before the option existed keep their names)."""
    from gandiff.schema import plain

    return plain(node) == DEFAULT_BACKEND


def final_loss(curve: np.ndarray) -> float:
    """The loss a curve ends at: the mean over its last 10% of steps (one step's loss is very noisy); 0 when
    nothing was trained."""
    if len(curve) == 0:
        return 0.0
    n = max(1, len(curve) // 10)
    return float(np.mean(curve[-n:]))
