"""Images/s of mixed-identity batched generation vs one identity at a time (diffusers load_lora_weights).

    python scripts/bench/generate.py                         # tiny model, CPU (about half a minute)
    python scripts/bench/generate.py --size sd15 --device cuda --dtype bfloat16 --resolution 512 \\
        --steps 30 --batch-size 32 --identities 16 --images-per-identity 6

--size sd15 builds Stable Diffusion 1.5-sized modules with random weights (no download). The two paths run
interleaved (--rounds, ``scripts/bench/harness.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gandiff.diffusion.bench import bench_generate, components_for, table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROUNDS, Comparison, print_comparisons, write_comparisons  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--identities", type=int, default=6)
    ap.add_argument("--images-per-identity", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=9)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", default=None, help="write the comparisons here (scripts/bench/all.py reads them)")
    a = ap.parse_args()
    comps = components_for(a.size, a.device, a.dtype)
    rows = bench_generate(
        comps,
        identities=a.identities,
        images_per_identity=a.images_per_identity,
        batch_size=a.batch_size,
        steps=a.steps,
        guidance=a.guidance,
        resolution=a.resolution,
        scheduler=a.scheduler,
        rank=a.rank,
        rounds=a.rounds,
    )
    print(
        f"generation, {a.size} model, {a.device} {a.dtype}, {a.resolution}x{a.resolution}, {a.steps} steps "
        f"{a.scheduler}, guidance {a.guidance}, {a.identities} identities x {a.images_per_identity} images"
    )
    print(table(rows))
    ref, mixed = rows
    comps = [Comparison(f"mixed-identity generation ({a.size})", mixed["method"], ref["method"],
                        mixed["seconds_rounds"], ref["seconds_rounds"], mixed["images"], "images/s")]
    print_comparisons("generate", comps)
    write_comparisons(a.json, "generate", comps)


if __name__ == "__main__":
    main()
