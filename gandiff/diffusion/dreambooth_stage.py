"""The ``dreambooth`` stage: learn every identity, a group of identities at a time, through the diffusion backend.

Reads ``identities/identities.parquet`` and ``images/<id>/*.png``; the backend (``dreambooth.backend``,
:mod:`gandiff.diffusion.backend`) trains each group and writes ``adapters/<id>/`` (Stable Diffusion: the
LoRA file or the fine-tuned modules, optional validation images; prior-preservation ``class_images/``);
this file adds ``adapters/<id>/loss.json`` and ``adapters.parquet`` (one row per identity: path, sha256,
final loss, prompts). Groups are fixed chunks of this shard's identity list; a group with any missing or
damaged output is retrained whole, and since every random draw is seeded per identity and step, it comes
out as it did the first time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gandiff.artifacts import atomic_write_json, file_sha256, read_table, select_shard, write_table
from gandiff.diffusion.backend import TrainIdentity, backend_is_default, build_backend, final_loss
from gandiff.pipeline import Stage, StageContext, StageError

log = logging.getLogger(__name__)


def class_noun(gender: Any, class_nouns: dict[str, str], default: str) -> str:
    """The class noun of an identity from its demographic label (``female`` -> ``woman``), else ``default``."""
    return class_nouns.get(str(gender), default) if gender is not None else default


def read_identities(folder: Path) -> list[dict[str, Any]]:
    """Rows of ``identities.parquet`` with their training images (``images/<id>/*.png``, anchor first)."""
    rows = read_table(folder / "identities.parquet")
    for r in rows:
        if "id" not in r:
            raise StageError(f"{folder / 'identities.parquet'}: no 'id' column (columns: {sorted(r)})")
        d = folder / "images" / r["id"]
        files = sorted(d.glob("*.png"), key=lambda p: (p.stem != "anchor", p.name))
        if not files:
            raise StageError(f"{d}: identity {r['id']} has no training images (*.png)")
        r["_images"] = files
    return rows


def chunks(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def open_backend(settings: Any, with_detector: bool = False) -> Any:
    """The diffusion backend ``dreambooth.backend`` names, not loaded yet (``settings``: the typed config);
    ``with_detector``: give it the face detector the identity loss places its crops with (``face.detector`` at
    ``identity.detect_size``)."""
    face_detector = None
    if with_detector:
        def face_detector() -> Any:
            from gandiff.curation.stage import build_detector

            return build_detector(settings.face.detector, settings.identity.detect_size)
    db = settings.dreambooth
    return build_backend(db.backend, db, settings.seed, Path(settings.paths.root).resolve(), face_detector)


class DreamBoothStage(Stage):
    name = "dreambooth"
    upstream = ("identities",)
    example = "gandiff dreambooth dreambooth.steps=800 dreambooth.identities_per_batch=16"
    config_keys = ("dreambooth",)
    # Nothing here only changes speed: identities_per_batch and class_batch_size change float rounding
    # (batched kernels), device and dtype change the numbers themselves. The backend is hashed on its own
    # key, and only when it is not the default (config_keys_for): folders made before it existed keep their key.
    ignore_keys = ("dreambooth.backend",)

    def config_keys_for(self, cfg: Any) -> tuple[str, ...]:
        keys = self.config_keys
        if not backend_is_default(cfg.dreambooth.get("backend")):
            keys = (*keys, "dreambooth.backend")
        # The identity loss places its crops with the face detector, at the identity stage's detector size.
        if float(cfg.dreambooth.get("identity_loss", 0.0) or 0.0) > 0:
            keys = (*keys, "face.detector", "identity.detect_size")
        return keys

    def items(self, ctx: StageContext) -> list[str]:
        return [r["id"] for r in read_table(ctx.input_dir("identities") / "identities.parquet")]

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        from gandiff.diffusion.prompts import item_seed

        s, seed = ctx.settings.dreambooth, ctx.settings.seed
        rows = {r["id"]: r for r in read_identities(ctx.input_dir("identities"))}
        backend = open_backend(ctx.settings, with_detector=s.identity_loss > 0)
        backend.load(s.dtype, s.device)
        nouns = {k: class_noun(rows[k].get("gender"), s.class_nouns or {}, s.class_noun) for k in rows}
        size = backend.training_group_size()
        mine = select_shard(list(rows), ctx.shard_index, ctx.shard_count)
        pending = set(keys)
        groups = [g for g in chunks(mine, size) if pending & set(g)]
        for group in ctx.progress(groups, total=len(groups), desc=f"dreambooth ({size} identities per batch)"):
            identities = [
                TrainIdentity(
                    k,
                    tuple(rows[k]["_images"]),
                    s.instance_prompt.replace("{token}", s.instance_token).replace("{noun}", nouns[k]),
                    nouns[k],
                    item_seed(seed, "dreambooth", k),
                )
                for k in group
            ]
            with backend.train_group(identities, ctx.dir) as trained:
                for i, ident in enumerate(identities):
                    self._save(ctx, backend, trained, i, ident, group, s.instance_token)

    def _save(self, ctx: StageContext, backend: Any, trained: Any, i: int, ident: TrainIdentity, group: list[str],
              token: str) -> None:
        """Identity ``i`` of a trained group: its adapter, its loss curve, its manifest row (recorded last)."""
        out = ctx.dir / "adapters" / ident.id
        saved = backend.save_adapter(trained, i, out)
        curve = trained.losses[:, i]  # (steps,)
        atomic_write_json(out / "loss.json", {"id": ident.id, "loss": [round(float(x), 6) for x in curve]})
        row = {
            "id": ident.id,
            "mode": saved.mode,
            "path": saved.weights.relative_to(ctx.dir).as_posix(),
            "sha256": file_sha256(saved.weights),
            "final_loss": round(final_loss(curve), 6),
            "token": token,
            "noun": ident.noun,
            "instance_prompt": ident.prompt,
            "class_prompt": saved.class_prompt,
            "rank": saved.rank,
            "steps": saved.steps,
            "group": ",".join(group),
            "train_images": len(ident.images),
        }
        ctx.items.put(ident.id, row, [saved.weights, out / "loss.json", *saved.extra])

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        rows = ctx.items.rows(keys)
        write_table(ctx.dir / "adapters.parquet", rows)
        classes = sorted({r["class_prompt"] for r in rows if r["class_prompt"]})
        losses = [r["final_loss"] for r in rows]
        return {
            "identities": len(rows),
            "class_prompts": len(classes),
            "mean_final_loss": round(sum(losses) / max(1, len(losses)), 6),
        }

