"""Shared measuring code for scripts/bench/*.py and scripts/gpu_check.py.

Every benchmark compares a gandiff code path against a plain reference loop on the same data in the
same process and reports the ratio; times are medians of repeats after a warm-up, with the device
synchronised; the FLOP floor is counted with ``torch.utils.flop_counter`` on the model actually run and
divided by the device's dense peak.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Dense peak FLOP/s by device name fragment and dtype (vendor datasheets, no sparsity).
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12, "tf32": 495e12},
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12, "tf32": 495e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12, "tf32": 156e12},
}


@dataclass
class Row:
    """One line of a benchmark table."""

    name: str
    value: float  # the headline figure (higher is better), in ``unit``
    unit: str
    reference: float | None = None  # the plain loop's figure, same unit
    floor_seconds: float | None = None  # FLOPs / peak for one unit of work
    measured_seconds: float | None = None  # seconds for one unit of work
    peak_mem_gb: float | None = None
    lower_is_better: bool = False  # seconds per item rather than items per second
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Speed-up over the reference (> 1 is faster), whichever way the unit points."""
        if not self.reference or not self.value:
            return None
        return self.reference / self.value if self.lower_is_better else self.value / self.reference

    @property
    def floor_ratio(self) -> float | None:
        if self.floor_seconds and self.measured_seconds:
            return self.measured_seconds / self.floor_seconds
        return None


def sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, device: Any = "cpu") -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call (forward, or forward + backward if ``fn`` calls backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_flops(device: Any, dtype: str) -> float | None:
    import torch

    if not str(device).startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for frag, table in PEAK_FLOPS.items():
        if frag in name:
            return table.get(dtype)
    return None


def reset_peak_memory(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: Any) -> float | None:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}g}"
    return str(x)


def print_table(title: str, rows: list[Row], file: Any = sys.stdout) -> None:
    head = ["benchmark", "value", "unit", "reference", "speed-up", "floor s", "measured s", "x floor", "peak GB"]
    body = [[r.name, _fmt(r.value), r.unit, _fmt(r.reference), _fmt(r.ratio), _fmt(r.floor_seconds),
             _fmt(r.measured_seconds), _fmt(r.floor_ratio), _fmt(r.peak_mem_gb)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    print(f"\n## {title}", file=file)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths)), file=file)


def write_json(path: str | Path, title: str, rows: list[Row], meta: dict[str, Any] | None = None) -> None:
    data = {"title": title, "meta": meta or {},
            "rows": [{**asdict(r), "ratio": r.ratio, "floor_ratio": r.floor_ratio} for r in rows]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
