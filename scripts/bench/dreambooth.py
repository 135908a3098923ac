"""Seconds per identity of multi-identity LoRA DreamBooth vs one identity at a time.

    python scripts/bench/dreambooth.py                       # tiny model, CPU, K = 1, 4, 8 (about a minute)
    python scripts/bench/dreambooth.py --size sd15 --device cuda --dtype bfloat16 --resolution 512 --ks 1 16

--size sd15 builds Stable Diffusion 1.5-sized modules with random weights (no download): the FLOPs
of the real model. Per-identity seconds are extrapolated to --planned-steps (800, the DreamBooth default).
"""

from __future__ import annotations

import argparse

from gandiff.diffusion.bench import bench_dreambooth, components_for, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8], help="identities per batch")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--planned-steps", type=int, default=800)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    a = ap.parse_args()
    comps = components_for(a.size, a.device, a.dtype)
    rows = bench_dreambooth(
        comps,
        ks=a.ks,
        steps=a.steps,
        warmup=a.warmup,
        resolution=a.resolution,
        rank=a.rank,
        gradient_checkpointing=a.gradient_checkpointing,
        planned_steps=a.planned_steps,
    )
    print(
        f"DreamBooth LoRA, {a.size} model, {a.device} {a.dtype}, {a.resolution}x{a.resolution}, rank {a.rank}, "
        "prior preservation on (batch = 2K)"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
