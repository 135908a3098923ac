"""Run a toy stage in its own process: ``python toy_runner.py STAGE override ...`` (the kill test's target)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy_stages  # noqa: E402

from gandiff.config import compose  # noqa: E402
from gandiff.pipeline import run_stage  # noqa: E402

toy_stages.register()
cfg = compose(sys.argv[2:])
print(run_stage(cfg, sys.argv[1])["status"])
