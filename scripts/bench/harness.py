"""Shared measuring code for scripts/bench/*.py and scripts/gpu_check.py.

Every benchmark compares a gandiff code path against a plain reference loop on the same data in the
same process and reports the ratio. The comparisons run *interleaved* (:func:`interleave`: reference,
gandiff, reference, gandiff ... for ``rounds`` rounds after one warm-up call each), and each round gives
one ratio (reference seconds / gandiff seconds of that round): a load change on a shared machine hits
both sides of a round alike, so the median ratio and its min-max (:class:`Comparison`) hold up where
absolute times do not. :func:`print_comparisons` prints them, :func:`write_comparisons` saves them for
``scripts/bench/all.py``'s summary. The device is synchronised around every timed call; the FLOP floor
is counted with ``torch.utils.flop_counter`` on the model actually run and divided by the device's dense
peak.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
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


def print_table(title: str, rows: list[Row], file: Any = None) -> None:
    file = file or sys.stdout  # looked up per call (a test's captured stdout, a redirect)
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


# ---------------------------------------------------------------------------------------- interleaved


ROUNDS = 5  # the fewest rounds a comparison runs (issue 20: at least 5)


@dataclass(frozen=True)
class Seconds:
    """What a timed function returns when it times its own part (e.g. training steps inside ``fit``):
    :func:`interleave` then uses ``seconds`` instead of the wall time of the whole call."""

    seconds: float


def _call(fn: Callable[[], Any], device: Any) -> tuple[float, float]:
    """(seconds, process CPU seconds or nan) of one call."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if isinstance(out, Seconds):
        return out.seconds, float("nan")
    return wall, cpu


def interleave(fns: dict[str, Callable[[], Any]], rounds: int = ROUNDS, warmup: int = 1, device: Any = "cpu"
               ) -> dict[str, tuple[list[float], list[float]]]:
    """Run every function ``warmup`` times, then ``rounds`` rounds of each in turn (in ``fns`` order: put
    the reference first); returns ``{label: (seconds per round, CPU seconds per round)}``."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: must be >= 1")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            wall, cpu = _call(fn, device)
            out[label][0].append(wall)
            out[label][1].append(cpu)
    return out


@contextmanager
def pinned_threads(threads: int) -> Iterator[str]:
    """Run the block with every BLAS / OpenMP pool (threadpoolctl) and, if torch is loaded, torch's intra-op
    pool at ``threads`` threads, so that the reference and gandiff are measured under the same count (a ratio
    then measures the algorithm, not how each side copes with oversubscription). Yields a line saying so."""
    if threads < 1:
        raise ValueError(f"threads={threads}: must be >= 1")
    from threadpoolctl import threadpool_info, threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
            yield (f"threads: {threads} (BLAS/OpenMP pools: {', '.join(pools) or 'none loaded'}"
                   + (f"; torch={threads}" if torch is not None else "") + ")")
        finally:
            if torch is not None:
                torch.set_num_threads(before)


@dataclass
class Comparison:
    """gandiff's path against the plain reference, round by round (same rounds, same order)."""

    name: str  # the benchmark row, e.g. "SFace embedding"
    gandiff: str  # what gandiff runs
    reference: str  # the plain reference it is compared with
    gandiff_seconds: list[float]
    reference_seconds: list[float]
    work: float = 1.0  # units of work per timed call (images, identities, pairs ...)
    unit: str = "items/s"
    gandiff_cpu: list[float] = field(default_factory=list)
    reference_cpu: list[float] = field(default_factory=list)
    note: str = ""  # why a ratio is what it is, printed under the table

    @property
    def ratios(self) -> list[float]:
        """Speed-up of each round: reference seconds / gandiff seconds (> 1: gandiff is faster)."""
        return [r / g for r, g in zip(self.reference_seconds, self.gandiff_seconds) if g > 0]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    @property
    def low(self) -> float:
        return min(self.ratios) if self.ratios else float("nan")

    @property
    def high(self) -> float:
        return max(self.ratios) if self.ratios else float("nan")

    @property
    def cpu_median(self) -> float | None:
        """Median ratio of process CPU seconds (steadier on a loaded machine), where both were measured."""
        r = [a / b for a, b in zip(self.reference_cpu, self.gandiff_cpu) if b > 0 and a == a and b == b]
        return statistics.median(r) if r else None

    @property
    def gandiff_rate(self) -> float:
        return self.work / statistics.median(self.gandiff_seconds)

    @property
    def reference_rate(self) -> float:
        return self.work / statistics.median(self.reference_seconds)

    @property
    def rounds(self) -> int:
        return len(self.ratios)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios, "median": self.median, "low": self.low, "high": self.high,
                "cpu_median": self.cpu_median, "gandiff_rate": self.gandiff_rate,
                "reference_rate": self.reference_rate, "rounds": self.rounds}


def compare(name: str, times: dict[str, tuple[list[float], list[float]]], gandiff: str, reference: str,
            work: float = 1.0, unit: str = "items/s", note: str = "") -> Comparison:
    """The :class:`Comparison` of two labels of one :func:`interleave` result."""
    (gw, gc), (rw, rc) = times[gandiff], times[reference]
    return Comparison(name, gandiff, reference, list(gw), list(rw), work, unit, list(gc), list(rc), note)


def format_ratio(c: Comparison) -> str:
    """``1.23x [1.05-1.41]``: median speed-up over the rounds, and its min-max."""
    return f"{c.median:.2f}x [{c.low:.2f}-{c.high:.2f}]"


def print_comparisons(title: str, comps: list[Comparison], file: Any = None) -> None:
    """The interleaved comparisons of one benchmark: rates (median over rounds) and the ratio's spread."""
    file = file or sys.stdout
    head = ["comparison", "gandiff", "reference", "rate", "ref rate", "speed-up [min-max]", "cpu", "n"]
    body = [[c.name, c.gandiff, c.reference, f"{c.gandiff_rate:.4g}", f"{c.reference_rate:.4g} {c.unit}",
             format_ratio(c), "-" if c.cpu_median is None else f"{c.cpu_median:.2f}x", str(c.rounds)]
            for c in comps]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    print(f"\n## {title}: interleaved, speed-up = reference s / gandiff s per round (median [min-max] of n; "
          "> 1: gandiff faster; cpu: the same on process CPU seconds)", file=file)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for b in body:
        print("  ".join(x.ljust(w) for x, w in zip(b, widths)), file=file)
    for c in comps:
        if c.note:
            print(f"note ({c.name}): {c.note}", file=file)


def write_comparisons(path: str | Path | None, bench: str, comps: list[Comparison],
                      meta: dict[str, Any] | None = None) -> None:
    """Save ``comps`` as JSON (what ``scripts/bench/all.py`` collects for its summary); no-op for None."""
    if not path:
        return
    data = {"bench": bench, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "meta": meta or {},
            "comparisons": [c.as_dict() for c in comps]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def read_comparisons(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    data["comparisons"] = [Comparison(**{k: v for k, v in c.items() if k in Comparison.__dataclass_fields__})
                           for c in data["comparisons"]]
    return data
