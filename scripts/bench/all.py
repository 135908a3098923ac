"""Every stage's benchmark in turn, at sizes that run in a few minutes on 2 CPU cores.

    python scripts/bench/all.py            # or: make bench
    python scripts/bench/all.py --only face,evaluate

Each script compares a gandiff code path with a plain reference loop on the same data in the same process,
interleaved (reference, gandiff, reference, gandiff ... at least 5 rounds; ``harness.py``), and prints its own
table; this runs them one after another, each in its own process so that one stage's threads and caches do
not colour the next, says which failed, and ends with one Markdown table of every headline comparison
(median speed-up with its min-max), the date and the total time: what docs/performance.md quotes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import format_ratio, read_comparisons  # noqa: E402

# script -> arguments for a run of a minute or two on a laptop-class CPU
QUICK = {
    "face": [],
    "identities": ["--num", "12", "24"],
    "dreambooth": ["--ks", "1", "8", "--steps", "6"],
    "optimizer_step": [],
    "generate": [],
    "curate": ["--images", "16", "--batch", "16"],
    "train": ["--steps", "6", "--batch-size", "16", "--workers", "1", "--classes", "50"],
    "evaluate": [],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(QUICK))
    args = p.parse_args()
    failed, rows = [], []
    start, date = time.perf_counter(), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            cmd = f"scripts/bench/{name}.py {' '.join(QUICK[name])}".strip()
            print(f"\n# {name}: {cmd}", flush=True)
            out = Path(tmp) / f"{name}.json"
            t0 = time.perf_counter()
            rc = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *QUICK[name], "--json", str(out)])
            print(f"[{name}: {time.perf_counter() - t0:.1f} s, exit {rc}]", flush=True)
            if rc:
                failed.append(name)
            if out.exists():
                rows += [(cmd, c) for c in read_comparisons(out)["comparisons"]]
    total = time.perf_counter() - start
    print(f"\n## make bench, {date}: `python scripts/bench/all.py` ({total:.0f} s); speed-up = reference s / "
          "gandiff s per interleaved round, median [min-max] of n rounds")
    print("\n| benchmark | gandiff | reference | speed-up | n | command |")
    print("|---|---|---|---|---|---|")
    for cmd, c in rows:
        print(f"| {c.name} | {c.gandiff} ({c.gandiff_rate:.4g} {c.unit}) | {c.reference} ({c.reference_rate:.4g}) | "
              f"{format_ratio(c)} | {c.rounds} | `{cmd}` |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
