"""Two small stages over files, for testing the stage contract (resume, kill, shards, merge).

``toy_make`` makes one PNG and one .npy per identity (deterministic from the seed and the id), doing
enough arithmetic per item that a kill lands mid-stage; ``toy_sum`` reads them and sums.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

from gandiff import pipeline
from gandiff.artifacts import atomic_path, atomic_write_json, identity_id, read_table, save_image, write_table
from gandiff.pipeline import Stage


class ToyMake(Stage):
    name = "toy_make"
    config_keys = ("identity",)
    ignore_keys = ("identity.batch_size",)

    def items(self, ctx):
        return [identity_id(i) for i in range(ctx.cfg.identity.num)]

    def process(self, ctx, keys):
        for key in keys:
            rng = np.random.default_rng([int(ctx.cfg.seed), zlib.crc32(key.encode())])
            a = rng.standard_normal((160, 160))
            for _ in range(25):  # busy work: the kill test wants items that take a few ms
                a = np.tanh(a @ a.T / 160.0)
            img = ((a - a.min()) / (np.ptp(a) + 1e-9) * 255).astype(np.uint8)
            img = np.stack([img, img[::-1], img[:, ::-1]], -1)
            save_image(ctx.dir / "images" / f"{key}.png", img)
            with atomic_path(ctx.dir / "arrays" / f"{key}.npy") as tmp:
                np.save(tmp, a[:8, :8])
            ctx.items.put(key, {"id": key, "mean": round(float(img.mean()), 6)},
                          [ctx.dir / "images" / f"{key}.png", ctx.dir / "arrays" / f"{key}.npy"])
            print(f"made {key}", flush=True)  # the kill test reads these to kill mid-stage

    def merge(self, ctx, keys):
        rows = ctx.items.rows(keys)
        write_table(ctx.dir / "manifest.parquet", rows)
        return {"items": len(rows)}


class ToySum(Stage):
    name = "toy_sum"
    upstream = ("toy_make",)
    config_keys = ("export",)

    def items(self, ctx):
        return ["total"]

    def process(self, ctx, keys):
        rows = read_table(ctx.input_dir("toy_make") / "manifest.parquet")
        atomic_write_json(ctx.dir / "total.json", {"sum": round(sum(r["mean"] for r in rows), 6), "n": len(rows)})
        ctx.items.put("total", {"n": len(rows)}, [ctx.dir / "total.json"])


class ToyDistributedSum(ToySum):
    """ToySum as a stage every DDP rank takes part in (as training does); counts its process calls."""

    name = "toy_dsum"
    distributed = True
    calls: list[bool] = []  # ctx.leader of each process call

    def process(self, ctx, keys):
        type(self).calls.append((ctx.leader, list(keys)))
        if ctx.leader:  # as every distributed stage must: ranks > 0 compute, rank 0 writes
            super().process(ctx, keys)


def register() -> None:
    pipeline.STAGE_CLASSES["toy_make"] = f"{__name__}:ToyMake"
    pipeline.STAGE_CLASSES["toy_sum"] = f"{__name__}:ToySum"
    pipeline.STAGE_CLASSES["toy_dsum"] = f"{__name__}:ToyDistributedSum"
