"""Every stage's benchmark in turn, at sizes that run in a few minutes on 2 CPU cores.

    python scripts/bench/all.py            # or: make bench
    python scripts/bench/all.py --only face,evaluate

Each script compares a gandiff code path with a plain reference loop on the same data in the same process
and prints its own table (ratios); this runs them one after another, each in its own process so that one
stage's threads and caches do not colour the next, and says which failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# script -> arguments for a run of a minute or two on a laptop-class CPU
QUICK = {
    "face": [],
    "identities": ["--num", "12"],
    "dreambooth": [],
    "generate": [],
    "curate": ["--images", "32", "--batch", "16"],
    "train": ["--steps", "6", "--workers", "1", "--classes", "50"],
    "evaluate": [],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(QUICK))
    args = p.parse_args()
    failed = []
    for name in args.only.split(","):
        print(f"\n# {name}: scripts/bench/{name}.py {' '.join(QUICK[name])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *QUICK[name]])
        print(f"[{name}: {time.perf_counter() - t0:.1f} s, exit {rc}]", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
