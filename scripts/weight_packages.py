"""Print the weight-only packages listed in pyproject.toml ([tool.gandiff] weight-packages), for pip --no-deps."""

import sys
import tomllib
from pathlib import Path

data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
sys.stdout.write(" ".join(data["tool"]["gandiff"]["weight-packages"]) + "\n")
