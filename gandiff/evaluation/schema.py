"""Config schema of the ``benchmark`` group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gandiff.schema import require


@dataclass
class BenchmarkConfig:
    # name -> path of an insightface verification .bin (lfw.bin, cfp_fp.bin, ...); empty in the demo
    verification: dict[str, str] = field(default_factory=dict)
    ijb: Any = None  # {root: ..., target: IJBC} or None
    reference_distribution: Any = None  # path of a reference score histogram (.json) or None
    num_folds: int = 10
    flip: bool = True

    def __post_init__(self) -> None:
        require(self.num_folds >= 2, "benchmark.num_folds", self.num_folds, "must be >= 2")
