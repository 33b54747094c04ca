"""Side-by-side timing on a shared, noisy machine, and the table it prints.

Every claim is a ratio of two versions run in the same process, interleaved:
round r runs each version `inner` times in turn, so a burst of load from other
processes hits both alike. A version's time is the median over rounds; a ratio
is the median over rounds of the per-round ratio.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Row:
    """One comparison: our path against a plain baseline on one case."""

    bench: str  # which benchmark, e.g. "train"
    case: str  # sizes, e.g. "cifar10 n=10 d=3072 fc 11x256"
    ours: str  # what "ours" is, e.g. "Trainer, fused Adam, 1 thread"
    ours_s: float  # seconds per unit of work (see unit)
    plain: str
    plain_s: float
    speedup: float  # plain_s / ours_s, median over interleaved rounds
    unit: str = "step"
    aim: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # printed under the row
    values: dict[str, float] = field(default_factory=dict)  # the numbers, for --json

    def as_dict(self) -> dict:
        return asdict(self)


def interleave(
    versions: dict[Hashable, Callable[[], None]],
    rounds: int,
    inner: int = 1,
    warm_up: bool = True,
) -> dict[Hashable, list[float]]:
    """Seconds per call of each version, one value per round, run interleaved.

    warm_up: call each version once, untimed, first (first calls allocate, load
    kernels and fault pages in); skip it for calls too slow to repeat.
    """
    for fn in versions.values() if warm_up else ():
        fn()
    times: dict[Hashable, list[float]] = {name: [] for name in versions}
    for _ in range(rounds):
        for name, fn in versions.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def speedup(plain: list[float], ours: list[float]) -> float:
    """Median over rounds of plain / ours (robust to load that drifts)."""
    return statistics.median(p / o for p, o in zip(plain, ours, strict=True))


def machine() -> dict[str, str]:
    """What the numbers were measured on, printed above the table."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln]
        model = names[0] if names else model
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default: spin)"),
        "load_avg_1m": f"{load[0]:.2f}",
    }


def format_table(rows: list[Row]) -> str:
    """A fixed-width table: one line per comparison, notes indented below it."""
    header = ("bench", "case", "ours", "plain", "speedup", "aim")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.bench,
                r.case,
                f"{_duration(r.ours_s)}/{r.unit}  {r.ours}",
                f"{_duration(r.plain_s)}/{r.unit}  {r.plain}",
                f"{r.speedup:.2f}x",
                r.aim,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
        elif rows[i - 1].notes:
            for key, value in rows[i - 1].notes.items():
                out.append(f"    {key}: {value}")
    return "\n".join(out)


def threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _duration(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
