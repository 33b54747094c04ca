"""Iterate a batched map x_{k+1} = f(x_k) many starts at a time, on any device.

`iterate` runs every start until it settles, diverges or runs out of steps;
`trajectory` records chosen iterates of a few starts (the galleries). The
engine keeps a batch of live starts on the device and syncs with the host only
every CHECK_EVERY steps, to drop finished starts and refill from the waiting
ones. Classifying where the starts end is `sweep.dynamics`.

Maps are batched callables (b, d) -> (b, d), e.g. an nn.Module in eval mode,
whose rows must not interact (no batch norm in training mode). A relative
distance is ||a - b|| / ||b||, b being the stored (or orbit) point compared to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Map = Callable[[Tensor], Tensor]

STATUSES = ("settled", "diverged", "unsettled")
SETTLED, DIVERGED, UNSETTLED, ON_CYCLE = range(4)  # iteration codes

# Steps run between host syncs; drop-out, refill and cycle matching happen there.
CHECK_EVERY = 8
# Floor of the denominator of relative distances: a stored point at the origin
# is only matched exactly (images in [0, 1] are never near it).
NORM_FLOOR = 1e-12
# Entries of one block of pairwise distances, bounding memory of torch.cdist.
DIST_BLOCK = 1 << 24


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
    ends, steps, codes, _ = iterate_codes(
        f, starts, max_steps, step_tol, batch_size, diverge_norm
    )
    return ends, steps, np.array(STATUSES)[codes]


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


class Anchors:
    """The stored cycle elements, flattened, for matching iterates against.

    Passed to `iterate_codes`, it confirms starts that walk a stored cycle
    (which never settle) while they iterate.
    """

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
        self.code = torch.zeros(0, **long)  # iteration code, UNSETTLED while live
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
        self.code = torch.cat([self.code, zeros + UNSETTLED])
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
        self.code = torch.where(live & settled, SETTLED, self.code)
        self.code = torch.where(live & blown, DIVERGED, self.code)
        self.done |= live & (blown | settled | (self.age >= max_steps))

    def match(self, anchors: Anchors) -> None:
        # a start on a stored cycle never settles: confirm it by two matches at
        # the phases that following the cycle from the first one predicts
        hit, at = anchors.match(self.x)
        hit &= self.code == UNSETTLED
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
        self.code = torch.where(confirmed, ON_CYCLE, self.code)
        self.target = torch.where(confirmed, anchors.cycle[at], self.target)
        self.done |= confirmed
        self.candidate = torch.where(hit, at, -1)
        self.matched_age = torch.where(hit, self.age, self.matched_age)


def iterate_codes(
    f: Map,
    starts: Tensor,
    max_steps: int,
    step_tol: float,
    batch_size: int,
    diverge_norm: float,
    anchors: Anchors | None = None,
) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """ends (n, d), steps (n,), iteration codes (n,) and stored cycle reached (n,).

    The codes are SETTLED, DIVERGED, UNSETTLED (ran max_steps) or ON_CYCLE
    (confirmed on a stored cycle of `anchors`, which `reached` then names).
    """
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


def find_periods(
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


def orbit(f: Map, x: Tensor, period: int) -> Tensor:
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


def closest(x: Tensor, points: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Smallest relative distance (m,) of each row of x to points, and which point."""
    rel, index = _nearest_tensor(x, points)
    return rel.cpu().numpy(), index.cpu().numpy()


def select_rows(x: Tensor, rows: np.ndarray) -> Tensor:
    """x[rows] with a numpy index, moved to x's device first."""
    return x[torch.as_tensor(rows, dtype=torch.long, device=x.device)]


def apply(f: Map, x: Tensor, batch_size: int = 4096) -> Tensor:
    """f(x) for x (m, d), batch_size rows at a time, without autograd."""
    with torch.no_grad():
        chunks = [f(x[lo : lo + batch_size]) for lo in range(0, len(x), batch_size)]
    return torch.cat(chunks) if chunks else x.clone()
