"""Suite-wide settings: no network, no W&B, quiet logs, headless plots."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def measure_script():
    """scripts/measure_generated.py as a module (scripts/ is not a package): the independent measurement of a run's
    generated images, which tests/diffusion and tests/evaluation both check."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "measure_generated.py"
    spec = importlib.util.spec_from_file_location("measure_generated", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
