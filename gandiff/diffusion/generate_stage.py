"""The ``generate`` stage: prompted variations of every identity, reproducible image by image.

Reads ``dreambooth/adapters.parquet``; writes ``images/<id>/<image_id>.png`` and ``images.parquet`` (one row per
image: prompt, per-family choices, seed, sampler, dtype, adapter hash, batch and position). Identities render in
groups through the diffusion backend (``dreambooth.backend``), each batch mixing a group's identities, each
sample through its own adapter; a damaged group is rendered again whole, so a resume makes the same batches.
``generation.source=gan`` copies each identity's GAN images instead (the GAN-only baseline). ``replay(cfg,
image_id)`` (``gandiff generate generation.replay=<image_id>``) renders an image again and compares pixels.

Design: docs/design.md#the-generate-stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gandiff.artifacts import read_table, save_image, select_shard, write_table
from gandiff.pipeline import Stage, StageContext, StageError
from gandiff.schema import plain

log = logging.getLogger(__name__)


def plan_identity(
    adapter_row: dict[str, Any], prompts_cfg: dict[str, Any], count: int, seed: int
) -> list[Any]:
    """The PromptSpecs of one identity's images (deterministic in run seed, identity id and image number)."""
    from gandiff.diffusion.prompts import parse_families, sample_prompts

    return sample_prompts(
        prompts_cfg["template"],
        prompts_cfg["negative"],
        parse_families(prompts_cfg["families"]),
        token=adapter_row["token"],
        noun=adapter_row["noun"],
        count=count,
        seed=seed,
        identity=adapter_row["id"],
        mode=prompts_cfg.get("mode", "sample"),
        product_families=prompts_cfg.get("product_families", ()),
    )


def plan_group(
    group: list[str],
    adapters: dict[str, dict[str, Any]],
    prompts_cfg: dict[str, Any],
    count: int,
    seed: int,
    batch_size: int,
    group_name: str,
) -> list[list[dict[str, Any]]]:
    """A group's images as batches: identity-major order, cut every ``batch_size`` images.

    Each image is a manifest row plus ``_slot`` (its adapter's slot: the identity's place in the group).
    """
    rows = []
    for slot, key in enumerate(group):
        for p in plan_identity(adapters[key], prompts_cfg, count, seed):
            image_id = f"{key}_{p.index:04d}"
            rows.append(
                {
                    "image_id": image_id,
                    "id": key,
                    "prompt": p.prompt,
                    "negative_prompt": p.negative,
                    **{f"choice_{name}": value for name, value in p.choices.items()},
                    "seed": p.seed,
                    "path": f"images/{key}/{image_id}.png",
                    "_slot": slot,
                }
            )
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for b, batch in enumerate(batches):
        for pos, r in enumerate(batch):
            r["batch"], r["position"] = f"{group_name}-b{b:04d}", pos
    return batches


def generation_source(cfg: Any) -> str:
    """``generation.source``: ``diffusion`` (DreamBooth adapters) or ``gan`` (the identities' own images)."""
    from omegaconf import OmegaConf

    return str(OmegaConf.select(cfg, "generation.source", default="diffusion"))


class GenerateStage(Stage):
    name = "generate"
    upstream = ("dreambooth",)  # the identities reach it through the adapters' manifest
    example = ("gandiff generate generation.images_per_identity=64 prompts=neutral\n"
               "              gandiff generate generation.replay=id_000003_0007   # re-render one image, same pixels")
    config_keys = ("prompts", "generation")
    # generation.replay makes nothing new. batch_size and identities_per_group are NOT here: they decide
    # which images share a batch, and batched float math rounds differently (off-by-one pixel values).
    # generation.source is not hashed: it changes the upstream stage (identities instead of dreambooth),
    # which the key hashes already; diffusion keys stay what they were before the option existed.
    ignore_keys = ("generation.replay", "generation.source")
    verify = "size"  # thousands of PNGs: re-hash them on resume only when asked (size catches truncation)

    def upstream_for(self, cfg: Any) -> tuple[str, ...]:
        return ("identities",) if generation_source(cfg) == "gan" else self.upstream

    def config_keys_for(self, cfg: Any) -> tuple[str, ...]:
        return () if generation_source(cfg) == "gan" else self.config_keys  # copies: only the identities matter

    def items(self, ctx: StageContext) -> list[str]:
        if generation_source(ctx.cfg) == "gan":
            return [r["id"] for r in read_table(ctx.input_dir("identities") / "identities.parquet")]
        return [r["id"] for r in read_table(ctx.input_dir("dreambooth") / "adapters.parquet")]

    def process(self, ctx: StageContext, keys: list[str]) -> None:
        if generation_source(ctx.cfg) == "gan":
            return self._copy_gan_images(ctx, keys)
        settings = ctx.settings
        g = settings.generation
        adapters = {r["id"]: r for r in read_table(ctx.input_dir("dreambooth") / "adapters.parquet")}
        mine = select_shard(list(adapters), ctx.shard_index, ctx.shard_count)
        renderer = GroupRenderer(settings, ctx.input_dir("dreambooth"))
        size = renderer.backend.render_group_size({a["mode"] for a in adapters.values()}, g.identities_per_group)
        groups = [(i, mine[i : i + size]) for i in range(0, len(mine), size)]
        pending = set(keys)
        todo = [(i, grp) for i, grp in groups if pending & set(grp)]
        shard = f"s{ctx.shard_index}of{ctx.shard_count}"
        for i, group in ctx.progress(todo, total=len(todo), desc="generate (groups)"):
            batches = plan_group(
                group,
                adapters,
                plain(settings.prompts),
                g.images_per_identity,
                settings.seed,
                g.batch_size,
                f"{shard}-g{i // size:05d}",
            )
            per_id: dict[str, list[dict[str, Any]]] = {k: [] for k in group}
            left = {k: g.images_per_identity for k in group}
            with renderer.adapters(group, adapters):
                for batch in batches:
                    for r, img in zip(batch, renderer.render(batch)):
                        save_image(ctx.dir / r["path"], img)
                        per_id[r["id"]].append(renderer.row(r, adapters[r["id"]]))
                        left[r["id"]] -= 1
                        if left[r["id"]] == 0:  # all of this identity's images are on disk
                            rows = per_id[r["id"]]
                            ctx.items.put(r["id"], {"id": r["id"], "images": rows}, [x["path"] for x in rows])

    def _copy_gan_images(self, ctx: StageContext, keys: list[str]) -> None:
        """The GAN-only baseline: each identity's GAN images (anchor first), copied, as manifest rows."""
        import shutil

        from gandiff.artifacts import atomic_path

        src_root = ctx.input_dir("identities") / "images"
        for ident in ctx.progress(keys, total=len(keys), desc="generate (GAN images)"):
            files = sorted((src_root / ident).glob("*.png"), key=lambda p: (p.stem != "anchor", p.name))
            if not files:
                raise StageError(f"{src_root / ident}: identity {ident} has no GAN images (*.png)")
            rows = []
            for n, src in enumerate(files):
                image_id = f"{ident}_{n:04d}"
                rel = f"images/{ident}/{image_id}.png"
                with atomic_path(ctx.dir / rel) as tmp:
                    shutil.copyfile(src, tmp)
                rows.append({"image_id": image_id, "id": ident, "prompt": "", "negative_prompt": "", "seed": -1,
                             "source": "gan", "gan_image": src.name, "path": rel})
            ctx.items.put(ident, {"id": ident, "images": rows}, [r["path"] for r in rows])

    def merge(self, ctx: StageContext, keys: list[str]) -> dict[str, Any]:
        rows = [img for r in ctx.items.rows(keys) for img in r["images"]]
        write_table(ctx.dir / "images.parquet", rows)
        counts: dict[str, Any] = {"images": len(rows), "identities": len(keys)}
        for col in sorted(c for c in (rows[0] if rows else {}) if c.startswith("choice_")):
            counts[f"{col}_share"] = round(sum(1 for r in rows if r[col]) / len(rows), 4)
        return counts


class GroupRenderer:
    """The backend loaded once for generation, a group's adapters attached, manifest rows rendered. Shared by
    the stage and replay."""

    def __init__(self, settings: Any, dreambooth_dir: Path):
        from gandiff.diffusion.backend import Sampler
        from gandiff.diffusion.dreambooth_stage import open_backend

        g = settings.generation
        self.dreambooth_dir = dreambooth_dir
        self.backend = open_backend(settings)
        self.backend.load(g.dtype, g.device)
        self.sampler = Sampler(g.scheduler, g.steps, g.guidance, g.resolution)

    def adapters(self, group: list[str], adapters: dict[str, dict[str, Any]]) -> Any:
        """Context: the group's adapters loaded (slot i = group[i])."""
        from gandiff.diffusion.backend import Adapter

        return self.backend.adapters(
            [Adapter(k, adapters[k]["mode"], self.dreambooth_dir / adapters[k]["path"]) for k in group]
        )

    def render(self, batch: list[dict[str, Any]]) -> list[Any]:
        from gandiff.diffusion.backend import RenderSpec

        specs = [RenderSpec(r["prompt"], r["negative_prompt"], int(r["seed"]), int(r["_slot"])) for r in batch]
        return self.backend.render(specs, self.sampler)

    def row(self, r: dict[str, Any], adapter: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in r.items() if not k.startswith("_")}
        out.update(
            scheduler=self.sampler.scheduler,
            steps=self.sampler.steps,
            guidance=self.sampler.guidance,
            resolution=self.sampler.resolution,
            dtype=self.backend.dtype,
            adapter_sha256=adapter["sha256"],
        )
        return out


def replay(cfg: Any, image_id: str) -> dict[str, Any]:
    """Render ``image_id`` again, with the batch it was made in, next to the original; compare pixels.

    Writes ``<image_id>.replay.png`` beside the image and returns ``{image_id, path, replay_path,
    max_abs_diff, differing_pixels, identical}``. Identical pixels are expected on the same device and
    dtype; another device or dtype gives a close but different image.
    """
    import numpy as np
    from PIL import Image

    from gandiff.artifacts import read_json
    from gandiff.pipeline import stage_dir

    if generation_source(cfg) == "gan":
        raise StageError(f"generation.replay={image_id!r}: generation.source=gan copies the GAN images, "
                         "there is nothing to render again")
    out_dir = stage_dir(cfg, "generate")
    manifest = out_dir / "images.parquet"
    if not manifest.exists():
        raise StageError(f"generation.replay={image_id}: {manifest} not found; run `gandiff generate` first")
    rows = read_table(manifest)
    target = next((r for r in rows if r["image_id"] == image_id), None)
    if target is None:
        raise StageError(
            f"generation.replay={image_id!r}: no such image_id in {manifest} "
            f"(ids look like {rows[0]['image_id'] if rows else 'id_000000_0000'})"
        )
    batch = sorted((r for r in rows if r["batch"] == target["batch"]), key=lambda r: r["position"])
    for key in ("scheduler", "steps", "guidance", "resolution"):
        if str(target[key]) != str(cfg.generation[key]):
            raise StageError(
                f"generation.replay: the image was made with generation.{key}={target[key]!r}, "
                f"the config says {cfg.generation[key]!r}"
            )
    # The DreamBooth folder this generation was built on (also when it was forced with force_inputs).
    dreambooth_dir = stage_dir(
        cfg, "dreambooth", read_json(out_dir / "stage.json")["inputs"]["dreambooth"]["key"]
    )
    adapters = {r["id"]: r for r in read_table(dreambooth_dir / "adapters.parquet")}
    group = list(dict.fromkeys(r["id"] for r in batch))
    for r in batch:
        if adapters[r["id"]]["sha256"] != r["adapter_sha256"]:
            raise StageError(f"generation.replay: the adapter of {r['id']} changed since {image_id} was made")
        r["_slot"] = group.index(r["id"])
    from gandiff.config import validate

    renderer = GroupRenderer(validate(cfg), dreambooth_dir)
    with renderer.adapters(group, adapters):
        images = renderer.render(batch)
    img = images[[r["image_id"] for r in batch].index(image_id)]
    path = out_dir / target["path"]
    replay_path = save_image(path.with_name(f"{image_id}.replay.png"), img)
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    b = np.asarray(img.convert("RGB"), dtype=np.int16)
    diff = np.abs(a - b)
    result = {
        "image_id": image_id,
        "path": str(path),
        "replay_path": str(replay_path),
        "max_abs_diff": int(diff.max()),
        "differing_pixels": int((diff.max(-1) > 0).sum()),
        "identical": bool((diff == 0).all()),
    }
    log.info(
        "replay %s: %s (max |diff| %d, %d pixels differ) -> %s",
        image_id,
        "identical" if result["identical"] else "DIFFERENT",
        result["max_abs_diff"],
        result["differing_pixels"],
        replay_path,
    )
    return result
