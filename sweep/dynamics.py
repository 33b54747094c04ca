"""Iterate a trained map x_{k+1} = f(x_k) and classify what it stores.

A training example is stored as an attractor when it is a fixed point of f and
the spectral radius of J_f there is below 1; a sequence is stored as a limit
cycle when f walks it and the radius of the ordered product of the Jacobians
along it is below 1 (Radhakrishnan, Belkin & Uhler 2020; see PAPER.md and
sweep.spectra). `measure_cycles` checks those criteria at the stored data;
`classify_starts` iterates many inputs and sorts out where each one ends.

Maps are batched callables (b, d) -> (b, d), e.g. an nn.Module in eval mode,
whose rows must not interact (no batch norm in training mode). A relative
distance is ||a - b|| / ||b||, b being the stored (or orbit) point compared to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sweep.spectra import cycle_radii, cycle_spectral_radius

Map = Callable[[Tensor], Tensor]

OUTCOMES = (
    "train",
    "cycle",
    "spurious_fixed",
    "spurious_cycle",
    "diverged",
    "unsettled",
)
_OUTCOME = {name: code for code, name in enumerate(OUTCOMES)}
STATUSES = ("settled", "diverged", "unsettled")
_SETTLED, _DIVERGED, _UNSETTLED, _ON_CYCLE = range(4)  # iteration codes

# Steps run between host syncs; drop-out, refill and cycle matching happen there.
CHECK_EVERY = 8
# Floor of the denominator of relative distances: a stored point at the origin
# is only matched exactly (images in [0, 1] are never near it).
NORM_FLOOR = 1e-12
# Entries of one block of pairwise distances, bounding memory of torch.cdist.
DIST_BLOCK = 1 << 24


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
    images = _apply(f, cycles.reshape(-1, d)).reshape(cycles.shape)
    targets = cycles.roll(-1, dims=1)  # (n_cycles, L, d)
    residuals = _relative(images - targets, targets).cpu().double().numpy()

    # stability of the cycle: the product of Jacobians, not its factors
    reports = []
    for res, cycle in zip(residuals, cycles, strict=True):
        step_radii, radius = cycle_radii(f, cycle, method)
        maps = bool((res <= tol.fixed_point_tol).all())
        reports.append(CycleReport(res, step_radii, radius, maps, maps and radius < 1))
    return reports


def iterate(
    f: Map,
    starts: Tensor,
    max_steps: int,
    step_tol: float,
    *,
    batch_size: int = 4096,
    diverge_norm: float = 1e6,
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Iterate every start (n, d) until it settles, diverges or runs max_steps.

    Returns ends (n, d), steps (n,) and status (n,) in STATUSES. Settled means
    ||x_{k+1} - x_k|| <= step_tol * sqrt(d); diverged means a non-finite iterate
    or ||x|| / sqrt(d) > diverge_norm. Finished starts drop out of the batch.
    """
    ends, steps, codes, _ = _iterate(
        f, starts, max_steps, step_tol, batch_size, diverge_norm
    )
    return ends, steps, np.array(STATUSES)[codes]


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
    anchors = _Anchors(cycles, tol.match_tol) if cycle_len > 1 else None
    ends, steps, codes, on_cycle = _iterate(
        f, starts, tol.max_steps, tol.step_tol, batch_size, tol.diverge_norm, anchors
    )
    outcome = np.full(len(starts), _OUTCOME["unsettled"])
    target = np.full(len(starts), -1)
    outcome[codes == _DIVERGED] = _OUTCOME["diverged"]
    outcome[codes == _ON_CYCLE] = _OUTCOME["cycle"]
    target[codes == _ON_CYCLE] = on_cycle[codes == _ON_CYCLE]

    # starts still moving after max_steps: is each on an orbit of short period?
    periods = np.zeros(len(starts), dtype=np.int64)
    moving = np.flatnonzero(codes == _UNSETTLED)
    settle_norm = tol.step_tol * math.sqrt(d)
    limit = tol.period_limit(cycle_len)
    moving_ends = _rows(ends, moving)
    periods[moving] = _find_periods(f, moving_ends, limit, settle_norm, batch_size)
    periods[codes == _SETTLED] = 1  # period 1 found late counts as settled too

    # fixed points: a training example, or a spurious fixed point
    fixed = np.flatnonzero(periods == 1)
    outcome[fixed] = _OUTCOME["spurious_fixed"]
    if cycle_len == 1 and len(fixed):
        rel, nearest = _nearest(_rows(ends, fixed), cycles[:, 0])
        hit = rel <= tol.match_tol
        outcome[fixed[hit]], target[fixed[hit]] = _OUTCOME["train"], nearest[hit]

    # longer orbits: one walking a stored cycle (seen late), or a spurious one
    loops = np.flatnonzero(periods > 1)
    outcome[loops] = _OUTCOME["spurious_cycle"]
    if anchors is not None and len(loops):
        loop_ends = _rows(ends, loops)
        follows, cycle_index = anchors.follows(loop_ends, _apply(f, loop_ends))
        outcome[loops[follows]] = _OUTCOME["cycle"]
        target[loops[follows]] = cycle_index[follows]

    # merge spurious endpoints into distinct attractors and measure each
    spurious: list[Spurious] = []
    for kind in (_OUTCOME["spurious_fixed"], _OUTCOME["spurious_cycle"]):
        rows = np.flatnonzero(outcome == kind)
        found_ends = _rows(ends, rows)
        labels, found = _merge(f, found_ends, periods[rows], tol.match_tol, method)
        target[rows] = labels + len(spurious)
        spurious += found
    return StartOutcomes(np.array(OUTCOMES)[outcome], target, steps, ends, spurious)


def trajectory(f: Map, x0: Tensor, steps: Sequence[int]) -> Tensor:
    """The iterates f^k(x0) for each k in steps: (g, len(steps), d) for x0 (g, d).

    One pass up to max(steps); k == 0 is x0 itself; steps may repeat or be
    unsorted, and the output follows their order.
    """
    if x0.dim() != 2:
        raise ValueError(f"x0 must have shape (g, d), got {tuple(x0.shape)}")
    if any(k < 0 for k in steps):
        raise ValueError(f"steps must be >= 0, got {list(steps)}")
    out = x0.new_empty(x0.shape[0], len(steps), x0.shape[1])
    wanted = {k: [i for i, s in enumerate(steps) if s == k] for k in set(steps)}
    last, x = max(steps, default=-1), x0
    with torch.no_grad():
        for k in range(last + 1):
            if k in wanted:
                out[:, wanted[k]] = x[:, None]
            if k < last:
                x = f(x)
    return out


class _Anchors:
    """The stored cycle elements, flattened, for matching iterates against."""

    def __init__(self, cycles: Tensor, match_tol: float) -> None:
        n_cycles, self.cycle_len, d = cycles.shape
        self.points = cycles.reshape(-1, d)  # (n_cycles * L, d)
        device = cycles.device
        self.cycle = torch.arange(n_cycles, device=device).repeat_interleave(
            self.cycle_len
        )
        self.phase = torch.arange(self.cycle_len, device=device).repeat(n_cycles)
        self.match_tol = match_tol

    def match(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest element (m,) of each row of x and whether it is within tol."""
        rel, index = _nearest_tensor(x, self.points)
        return rel <= self.match_tol, index

    def follows(self, x: Tensor, fx: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Rows where x matches element j of a cycle and f(x) matches j + 1."""
        hit_x, at_x = self.match(x)
        hit_fx, at_fx = self.match(fx)
        next_phase = (self.phase[at_x] + 1) % self.cycle_len
        same = self.cycle[at_x] == self.cycle[at_fx]
        follows = hit_x & hit_fx & same & (self.phase[at_fx] == next_phase)
        return follows.cpu().numpy(), self.cycle[at_x].cpu().numpy()


class _Batch:
    """The active starts: iterates, ages and codes; finished rows stay frozen."""

    def __init__(self, like: Tensor) -> None:
        long = dict(dtype=torch.long, device=like.device)
        self.x = like[:0]  # (m, d)
        self.index = torch.zeros(0, **long)  # (m,) row of each start in `starts`
        self.age = torch.zeros(0, **long)  # steps applied so far
        self.code = torch.zeros(0, **long)  # iteration code, _UNSETTLED while live
        self.target = torch.zeros(0, **long)  # stored cycle reached, else -1
        self.candidate = torch.zeros(0, **long)  # anchor matched at the last check
        self.matched_age = torch.zeros(0, **long)  # age at that match
        self.done = torch.zeros(0, dtype=torch.bool, device=like.device)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, x: Tensor, index: Tensor, max_steps: int) -> None:
        zeros = torch.zeros_like(index)
        self.x = torch.cat([self.x, x])
        self.index = torch.cat([self.index, index])
        self.age = torch.cat([self.age, zeros])
        self.code = torch.cat([self.code, zeros + _UNSETTLED])
        self.target = torch.cat([self.target, zeros - 1])
        self.candidate = torch.cat([self.candidate, zeros - 1])
        self.matched_age = torch.cat([self.matched_age, zeros])
        self.done = torch.cat([self.done, torch.zeros_like(zeros, dtype=torch.bool)])
        self.done |= self.age >= max_steps

    def keep(self, rows: Tensor) -> None:
        for name in ("x", "index", "age", "code", "target", "candidate"):
            setattr(self, name, getattr(self, name)[rows])
        self.matched_age, self.done = self.matched_age[rows], self.done[rows]

    def step(self, f: Map, settle_norm: float, blowup_norm: float, max_steps: int):
        y = f(self.x)
        live = ~self.done
        moved = (y - self.x).norm(dim=1)  # (m,)
        size = y.norm(dim=1)
        blown = ~torch.isfinite(size) | (size > blowup_norm)
        settled = ~blown & (moved <= settle_norm)
        self.x = torch.where(live[:, None], y, self.x)
        self.age += live
        # torch.where, not masked assignment: a boolean index syncs the device
        self.code = torch.where(live & settled, _SETTLED, self.code)
        self.code = torch.where(live & blown, _DIVERGED, self.code)
        self.done |= live & (blown | settled | (self.age >= max_steps))

    def match(self, anchors: _Anchors) -> None:
        # a start on a stored cycle never settles: confirm it by two matches at
        # the phases that following the cycle from the first one predicts
        hit, at = anchors.match(self.x)
        hit &= self.code == _UNSETTLED
        before = self.candidate.clamp(min=0)
        elapsed = self.age - self.matched_age
        expected = (anchors.phase[before] + elapsed) % anchors.cycle_len
        confirmed = (
            hit
            & (self.candidate >= 0)
            & (elapsed > 0)
            & (anchors.cycle[at] == anchors.cycle[before])
            & (anchors.phase[at] == expected)
        )
        self.code = torch.where(confirmed, _ON_CYCLE, self.code)
        self.target = torch.where(confirmed, anchors.cycle[at], self.target)
        self.done |= confirmed
        self.candidate = torch.where(hit, at, -1)
        self.matched_age = torch.where(hit, self.age, self.matched_age)


def _iterate(
    f: Map,
    starts: Tensor,
    max_steps: int,
    step_tol: float,
    batch_size: int,
    diverge_norm: float,
    anchors: _Anchors | None = None,
) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """ends (n, d), steps (n,), iteration codes (n,) and stored cycle reached (n,)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    n, d = starts.shape
    settle_norm, blowup_norm = step_tol * math.sqrt(d), diverge_norm * math.sqrt(d)
    ends = starts.clone()
    long = dict(dtype=torch.long, device=starts.device)
    steps, codes, reached = (torch.zeros(n, **long) for _ in range(3))
    batch, loaded = _Batch(starts), 0
    with torch.no_grad():
        while loaded < n or len(batch):
            # keep the batch full with starts not yet iterated
            take = min(batch_size - len(batch), n - loaded)
            index = torch.arange(loaded, loaded + take, **long)
            batch.add(starts[index], index, max_steps)
            loaded += take

            # a few steps with no host sync, then one to drop finished starts
            for _ in range(CHECK_EVERY):
                batch.step(f, settle_norm, blowup_norm, max_steps)
            if anchors is not None:
                batch.match(anchors)
            done = batch.done.nonzero().squeeze(1)
            rows = batch.index[done]
            ends[rows], steps[rows] = batch.x[done], batch.age[done]
            codes[rows], reached[rows] = batch.code[done], batch.target[done]
            batch.keep((~batch.done).nonzero().squeeze(1))
    return ends, steps.cpu().numpy(), codes.cpu().numpy(), reached.cpu().numpy()


def _find_periods(
    f: Map, ends: Tensor, max_period: int, settle_norm: float, batch_size: int
) -> np.ndarray:
    """Smallest p <= max_period with ||f^p(x) - x|| <= settle_norm, else 0."""
    periods = torch.zeros(len(ends), dtype=torch.long, device=ends.device)
    with torch.no_grad():
        for lo in range(0, len(ends), batch_size):
            x = y = ends[lo : lo + batch_size]
            found = periods[lo : lo + batch_size]
            for p in range(1, max_period + 1):
                y = f(y)
                closed = (found == 0) & ((y - x).norm(dim=1) <= settle_norm)
                found = torch.where(closed, p, found)
            periods[lo : lo + batch_size] = found
    return periods.cpu().numpy()


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
        points = _orbit(f, ends[lead], int(periods[lead]))  # (p, d)
        rel, _ = _nearest(_rows(ends, remaining), points)
        same = rel <= match_tol
        same[0] = True
        labels[remaining[same]] = len(found)
        radius = cycle_spectral_radius(f, points, method)
        point = ends[lead].detach().cpu().numpy()
        period = int(periods[lead])
        found.append(Spurious(point, period, radius, radius < 1, int(same.sum())))
        remaining = remaining[~same]
    return labels, found


def _orbit(f: Map, x: Tensor, period: int) -> Tensor:
    """x, f(x), ..., f^{period-1}(x) as (period, d)."""
    points = [x[None]]
    with torch.no_grad():
        for _ in range(period - 1):
            points.append(f(points[-1]))
    return torch.cat(points)


def _nearest_tensor(x: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Smallest relative distance of each row of x (m, d) to points (A, d)."""
    norms = points.norm(dim=1).clamp_min(NORM_FLOOR)  # (A,)
    rows = max(1, DIST_BLOCK // max(1, len(points)))
    rel, index = [], []
    for lo in range(0, len(x), rows):
        block = torch.cdist(x[lo : lo + rows], points) / norms  # (rows, A)
        best = block.min(dim=1)
        rel.append(best.values)
        index.append(best.indices)
    if not rel:
        return x.new_zeros(0), torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(rel), torch.cat(index)


def _nearest(x: Tensor, points: Tensor) -> tuple[np.ndarray, np.ndarray]:
    rel, index = _nearest_tensor(x, points)
    return rel.cpu().numpy(), index.cpu().numpy()


def _rows(x: Tensor, rows: np.ndarray) -> Tensor:
    """x[rows] with a numpy index, moved to x's device first."""
    return x[torch.as_tensor(rows, dtype=torch.long, device=x.device)]


def _relative(diff: Tensor, ref: Tensor) -> Tensor:
    return diff.norm(dim=-1) / ref.norm(dim=-1).clamp_min(NORM_FLOOR)


def _apply(f: Map, x: Tensor, batch_size: int = 4096) -> Tensor:
    with torch.no_grad():
        chunks = [f(x[lo : lo + batch_size]) for lo in range(0, len(x), batch_size)]
    return torch.cat(chunks) if chunks else x.clone()


def _check_cycles(cycles: Tensor) -> tuple[int, int, int]:
    if cycles.dim() != 3 or min(cycles.shape) < 1:
        raise ValueError(
            f"cycles must have shape (n_cycles, L, d), got {tuple(cycles.shape)}; "
            "pass training examples x (n, d) as x[:, None, :]"
        )
    return tuple(cycles.shape)
