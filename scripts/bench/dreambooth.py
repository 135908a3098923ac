"""Seconds per identity of multi-identity LoRA DreamBooth vs one identity at a time.

    python scripts/bench/dreambooth.py                       # tiny model, CPU, K = 1, 4, 8 (about a minute)
    python scripts/bench/dreambooth.py --size sd15 --device cuda --dtype bfloat16 --resolution 512 --ks 1 16

--size sd15 builds Stable Diffusion 1.5-sized modules with random weights (no download): the FLOPs
of the real model. Per-identity seconds are extrapolated to --planned-steps (800, the DreamBooth default).
The K values run interleaved (K = 1, 4, 8, 1, 4, 8 ... for --rounds rounds, ``scripts/bench/harness.py``);
each K > 1 is compared with K = 1 round by round: seconds per identity-step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gandiff.diffusion.bench import bench_dreambooth, components_for, table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROUNDS, Comparison, print_comparisons, write_comparisons  # noqa: E402


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
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", default=None, help="write the comparisons here (scripts/bench/all.py reads them)")
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
        rounds=a.rounds,
    )
    print(
        f"DreamBooth LoRA, {a.size} model, {a.device} {a.dtype}, {a.resolution}x{a.resolution}, rank {a.rank}, "
        "prior preservation on (batch = 2K)"
    )
    print(table(rows))
    ref = rows[0]
    comps = [Comparison(f"DreamBooth K = {r['K']} vs one at a time ({a.size})", f"multi-LoRA, K = {r['K']} per batch",
                        f"K = {ref['K']} (one identity at a time)",
                        [t / r["K"] for t in r["s_per_step_rounds"]], [t / ref["K"] for t in ref["s_per_step_rounds"]],
                        1.0, "identity-steps/s") for r in rows[1:]]
    print_comparisons("dreambooth", comps)
    write_comparisons(a.json, "dreambooth", comps[-1:])


if __name__ == "__main__":
    main()
