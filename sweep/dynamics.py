"""Iterate a trained map x_{k+1} = f(x_k) and classify what it stores.

A training example is stored as an attractor when it is a fixed point of f and
the spectral radius of J_f there is below 1; a sequence is stored as a limit
cycle when f walks it and the radius of the ordered product of the Jacobians
along it is below 1 (Radhakrishnan, Belkin & Uhler 2020; see PAPER.md and
sweep.spectra). `measure_cycles` checks those criteria at the stored data;
`classify_starts` iterates many inputs (with the engine of sweep.iteration,
whose `iterate` and `trajectory` are re-exported here) and sorts out where
each one ends.

Maps are batched callables (b, d) -> (b, d), e.g. an nn.Module in eval mode,
whose rows must not interact (no batch norm in training mode). A relative
distance is ||a - b|| / ||b||, b being the stored (or orbit) point compared to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from sweep import metrics
from sweep.iteration import (
    CHECK_EVERY,
    DIST_BLOCK,
    DIVERGED,
    NORM_FLOOR,
    ON_CYCLE,
    SETTLED,
    STATUSES,
    UNSETTLED,
    Anchors,
    Map,
    apply,
    closest,
    find_periods,
    iterate,
    iterate_codes,
    orbit,
    select_rows,
    trajectory,
)
from sweep.spectra import cycle_radii, cycle_spectral_radius

# what callers import from here: the classification, and the iteration API of
# sweep.iteration that used to live here
__all__ = [
    "OUTCOMES", "Tolerances", "CycleReport", "Spurious", "StartOutcomes",
    "measure_cycles", "classify_starts", "Map", "STATUSES", "CHECK_EVERY",
    "NORM_FLOOR", "DIST_BLOCK", "iterate", "trajectory",
]  # fmt: skip

# the metric names are defined once, in sweep.metrics
OUTCOMES = metrics.OUTCOMES
_OUTCOME = {name: code for code, name in enumerate(OUTCOMES)}


@dataclass(frozen=True)
class Tolerances:
    """When f(x) "is" x, when an endpoint "is" a stored point, when to stop.

    fixed_point_tol: relative residual ||f(x_j) - x_{j+1}|| / ||x_{j+1}|| under
        which f maps a stored point where it should. A net at MSE 1e-8 errs by
        1e-4 RMS per pixel, a relative residual ~3e-4 for an MNIST digit (RMS
        pixel ~0.3); 1e-3 leaves room for examples fitted worse than average.
    match_tol: relative distance under which an endpoint is a stored point (or
        two endpoints are one attractor): the paper's "small relative
        distance". 1e-2 is far under the gap between two training images
        (>= 0.19 for MNIST, >= 0.16 for CIFAR-10, measured on the first 1,000),
        but consecutive movie frames can be 0.005 apart: matching always takes
        the nearest stored element, and cycles are confirmed by their phase.
    step_tol: settled when ||x_{k+1} - x_k|| <= step_tol * sqrt(d), i.e. an RMS
        step of 1e-6 per pixel: at a radius-0.9 attractor the endpoint is then
        within ~1e-5 RMS of the fixed point, far inside match_tol.
    max_steps: iterations allowed per start; the paper iterates 1,000.
    max_period: longest period searched for orbits outside the stored cycles;
        0 means 2 * (stored cycle length), at least 2, so a period-2 flip of an
        autoencoder and a cycle twice as long as the stored ones are both seen.
    diverge_norm: an iterate with ||x|| / sqrt(d) (RMS pixel) above this, or not
        finite, has diverged; 1e6 is far outside pixels in [0, 1] yet far from
        float32 overflow.
    """

    fixed_point_tol: float = 1e-3
    match_tol: float = 1e-2
    step_tol: float = 1e-6
    max_steps: int = 1000
    max_period: int = 0
    diverge_norm: float = 1e6

    def __post_init__(self) -> None:
        for name in ("fixed_point_tol", "match_tol", "step_tol", "diverge_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("max_steps", "max_period"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")

    def period_limit(self, cycle_len: int) -> int:
        """The longest period searched, given the stored cycles' length."""
        return self.max_period or max(2, 2 * cycle_len)


@dataclass
class CycleReport:
    """Whether one stored cycle (a training example when L == 1) is stored."""

    residuals: np.ndarray  # (L,) relative ||f(x_j) - x_{j+1}|| / ||x_{j+1}||
    step_radii: np.ndarray  # (L,) spectral radius of J_f(x_j) at each element
    spectral_radius: float  # radius of the ordered product (step_radii[0] if L == 1)
    maps: bool  # every residual <= fixed_point_tol
    stable: bool  # maps and spectral_radius < 1


@dataclass
class Spurious:
    """A distinct attractor outside the stored data."""

    point: np.ndarray  # (d,) one point of the orbit (the representative)
    period: int  # 1 for a fixed point
    spectral_radius: float  # of J (period 1) or of the product over the orbit
    stable: bool  # spectral_radius < 1
    n_hits: int  # starts that ended on it


@dataclass
class StartOutcomes:
    """Where each start ended; see `classify_starts`."""

    outcome: np.ndarray  # (n,) str, one of OUTCOMES
    target: np.ndarray  # (n,) int: example, cycle or `spurious` index, else -1
    steps: np.ndarray  # (n,) int, steps until the start settled / was classified
    ends: Tensor  # (n, d) final iterates, on the input's device
    spurious: list[Spurious]


def measure_cycles(
    f: Map, cycles: Tensor, tol: Tolerances = Tolerances(), method: str = "auto"
) -> list[CycleReport]:
    """Check each stored cycle (n_cycles, L, d): does f walk it, and is it stable?

    With L == 1 these are the "is x_i an attractor" measurements.
    """
    n_cycles, cycle_len, d = _check_cycles(cycles)

    # residual of each step x_j -> x_{j+1}, the last element wrapping to the first
    images = apply(f, cycles.reshape(-1, d)).reshape(cycles.shape)
    targets = cycles.roll(-1, dims=1)  # (n_cycles, L, d)
    residuals = _relative(images - targets, targets).cpu().double().numpy()

    # stability of the cycle: the product of Jacobians, not its factors
    reports = []
    for res, cycle in zip(residuals, cycles, strict=True):
        step_radii, radius = cycle_radii(f, cycle, method)
        maps = bool((res <= tol.fixed_point_tol).all())
        reports.append(CycleReport(res, step_radii, radius, maps, maps and radius < 1))
    return reports


def classify_starts(
    f: Map,
    starts: Tensor,
    cycles: Tensor,
    tol: Tolerances = Tolerances(),
    method: str = "auto",
    *,
    batch_size: int = 4096,
) -> StartOutcomes:
    """Iterate starts (n, d) and say where each ends, relative to stored cycles.

    cycles (n_cycles, L, d) are the stored sequences; L == 1 means training
    examples. Each start gets exactly one outcome:
    - "train" i: settled at a fixed point within match_tol of example i (L == 1);
    - "cycle" c (L > 1): matched an element of stored cycle c at two checks
      CHECK_EVERY steps apart, at the phases that following the cycle
      predicts; or, still moving at max_steps, on a short orbit (see below)
      whose point matches element j of cycle c and whose image matches j + 1;
    - "spurious_fixed": settled at a fixed point that is no training example;
    - "spurious_cycle": after max_steps, on an orbit of smallest period p <=
      max_period, found as ||f^p(x) - x|| <= step_tol * sqrt(d) (the settling
      rule applied to f^p), that is not a stored cycle;
    - "diverged", else "unsettled".
    Spurious endpoints within match_tol of a kept attractor's orbit are merged
    into it (first start first); each distinct one gets its spectral radius,
    and unstable ones (radius >= 1) are still reported.

    note: a start converging to x_i more slowly than step_tol allows within
    max_steps (radius near 1) is "unsettled" even when it is within match_tol;
    its end is in `ends` for a caller that wants a looser reading.
    TODO: starts on a spurious cycle run all max_steps before the period
    search; finding them earlier needs a ring buffer of the last max_period
    iterates (max_period x batch x d floats), too big for movie-sized d.
    """
    n_cycles, cycle_len, d = _check_cycles(cycles)
    if starts.dim() != 2 or starts.shape[1] != d:
        raise ValueError(
            f"starts must have shape (n, {d}) to match the cycles, "
            f"got {tuple(starts.shape)}"
        )
    cycles = cycles.to(starts)
    anchors = Anchors(cycles, tol.match_tol) if cycle_len > 1 else None
    ends, steps, codes, on_cycle = iterate_codes(
        f, starts, tol.max_steps, tol.step_tol, batch_size, tol.diverge_norm, anchors
    )
    outcome = np.full(len(starts), _OUTCOME["unsettled"])
    target = np.full(len(starts), -1)
    outcome[codes == DIVERGED] = _OUTCOME["diverged"]
    outcome[codes == ON_CYCLE] = _OUTCOME["cycle"]
    target[codes == ON_CYCLE] = on_cycle[codes == ON_CYCLE]

    # starts still moving after max_steps: is each on an orbit of short period?
    periods = np.zeros(len(starts), dtype=np.int64)
    moving = np.flatnonzero(codes == UNSETTLED)
    settle_norm = tol.step_tol * math.sqrt(d)
    limit = tol.period_limit(cycle_len)
    moving_ends = select_rows(ends, moving)
    periods[moving] = find_periods(f, moving_ends, limit, settle_norm, batch_size)
    periods[codes == SETTLED] = 1  # period 1 found late counts as settled too

    # fixed points: a training example, or a spurious fixed point
    fixed = np.flatnonzero(periods == 1)
    outcome[fixed] = _OUTCOME["spurious_fixed"]
    if cycle_len == 1 and len(fixed):
        rel, nearest = closest(select_rows(ends, fixed), cycles[:, 0])
        hit = rel <= tol.match_tol
        outcome[fixed[hit]], target[fixed[hit]] = _OUTCOME["train"], nearest[hit]

    # longer orbits: one walking a stored cycle (seen late), or a spurious one
    loops = np.flatnonzero(periods > 1)
    outcome[loops] = _OUTCOME["spurious_cycle"]
    if anchors is not None and len(loops):
        loop_ends = select_rows(ends, loops)
        follows, cycle_index = anchors.follows(loop_ends, apply(f, loop_ends))
        outcome[loops[follows]] = _OUTCOME["cycle"]
        target[loops[follows]] = cycle_index[follows]

    # merge spurious endpoints into distinct attractors and measure each
    spurious: list[Spurious] = []
    for kind in (_OUTCOME["spurious_fixed"], _OUTCOME["spurious_cycle"]):
        rows = np.flatnonzero(outcome == kind)
        found_ends = select_rows(ends, rows)
        labels, found = _merge(f, found_ends, periods[rows], tol.match_tol, method)
        target[rows] = labels + len(spurious)
        spurious += found
    return StartOutcomes(np.array(OUTCOMES)[outcome], target, steps, ends, spurious)


def _merge(
    f: Map, ends: Tensor, periods: np.ndarray, match_tol: float, method: str
) -> tuple[np.ndarray, list[Spurious]]:
    """Group endpoints (k, d) into distinct attractors; first endpoint leads."""
    labels = np.full(len(ends), -1)
    found: list[Spurious] = []
    remaining = np.arange(len(ends))
    while len(remaining):
        # the leader's whole orbit: a cycle endpoint may sit at any of its points
        lead = remaining[0]
        points = orbit(f, ends[lead], int(periods[lead]))  # (p, d)
        rel, _ = closest(select_rows(ends, remaining), points)
        same = rel <= match_tol
        same[0] = True
        labels[remaining[same]] = len(found)
        radius = cycle_spectral_radius(f, points, method)
        point = ends[lead].detach().cpu().numpy()
        period = int(periods[lead])
        found.append(Spurious(point, period, radius, radius < 1, int(same.sum())))
        remaining = remaining[~same]
    return labels, found


def _relative(diff: Tensor, ref: Tensor) -> Tensor:
    return diff.norm(dim=-1) / ref.norm(dim=-1).clamp_min(NORM_FLOOR)


def _check_cycles(cycles: Tensor) -> tuple[int, int, int]:
    if cycles.dim() != 3 or min(cycles.shape) < 1:
        raise ValueError(
            f"cycles must have shape (n_cycles, L, d), got {tuple(cycles.shape)}; "
            "pass training examples x (n, d) as x[:, None, :]"
        )
    return tuple(cycles.shape)
