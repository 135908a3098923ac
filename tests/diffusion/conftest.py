"""Shared fixtures: the tiny diffusion model, and a fake ``identities`` stage in the real on-disk layout.

The fake stage writes what the identities stage writes (``identities.parquet`` with ``id`` and
``gender``, ``images/<id>/anchor.png`` and ``var_XX.png`` at 64x64) from smooth random colour fields,
in a second or two, so the DreamBooth and generation stages are tested on their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gandiff.artifacts import identity_id, save_image, write_table
from gandiff.pipeline import STAGE_CLASSES, Stage

GENDERS = ("female", "male", None)


class FakeIdentitiesStage(Stage):
    name = "identities"
    config_keys = ("identity",)

    def items(self, ctx: Any) -> list[str]:
        return [identity_id(i) for i in range(int(ctx.cfg.identity.num))]

    def process(self, ctx: Any, keys: list[str]) -> None:
        for key in keys:
            n = int(key.split("_")[1])
            rng = np.random.default_rng(n)
            files = []
            for j, name in enumerate(["anchor"] + [f"var_{v:02d}" for v in range(2)]):
                # A smooth colour field: low-frequency noise upsampled to 64x64 (RGB uint8).
                low = rng.uniform(0, 255, (4, 4, 3)) * 0.5 + rng.uniform(0, 255, 3) * 0.5
                img = np.kron(low, np.ones((16, 16, 1))).astype(np.uint8)
                files.append(save_image(ctx.dir / "images" / key / f"{name}.png", img))
            ctx.items.put(key, {"id": key, "gender": GENDERS[n % 3], "age_bin": "20-29", "age": 25.0}, files)

    def merge(self, ctx: Any, keys: list[str]) -> dict[str, Any]:
        write_table(ctx.dir / "identities.parquet", ctx.items.rows(keys))
        return {"identities": len(keys)}


@pytest.fixture(scope="package", autouse=True)
def fake_identities_stage():
    """Route the ``identities`` stage to the fake one while this folder's tests run (package scope: a
    session-scoped patch would outlive the folder and hand the fake to every later test)."""
    mp = pytest.MonkeyPatch()
    mp.setitem(STAGE_CLASSES, "identities", f"{__name__}:FakeIdentitiesStage")
    yield
    mp.undo()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny models gain nothing from two, and on a shared 2-core runner OpenMP
    threads spin-waiting on each other made this folder's tests ~3x slower (24 s vs 71 s here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny model folder, built once per session (as ``builtin:tiny-sd`` would build it)."""
    from gandiff.diffusion.components import build_tiny_components

    return build_tiny_components(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_base):
    from gandiff.diffusion.components import load_components

    return load_components(str(tiny_base), "float32", "cpu")


def compose_run(root: Path, base: Path, *overrides: str):
    """The demo config with fast DreamBooth / generation settings, rooted in a temporary folder.

    DreamBooth defaults to multi-identity LoRA with prior preservation here (the paper-like setting the
    stage tests are about; the demo itself fine-tunes fully); ``overrides`` replace any of these.
    """
    from gandiff.config import compose

    defaults = [
        f"paths.root={root}",
        "logger=none",
        "prompts=gandiff",
        f"dreambooth.base={base}",
        "identity.num=4",
        "dreambooth.mode=lora",
        "dreambooth.train_text_encoder=false",
        "dreambooth.prior_weight=1.0",
        "dreambooth.learning_rate=2e-3",
        "dreambooth.steps=3",
        "dreambooth.identities_per_batch=3",
        "dreambooth.num_class_images=2",
        "dreambooth.class_image_steps=2",
        "generation.images_per_identity=3",
        "generation.steps=2",
        "generation.batch_size=4",
    ]
    given = {o.split("=", 1)[0] for o in overrides}
    return compose([*(d for d in defaults if d.split("=", 1)[0] not in given), *overrides])
