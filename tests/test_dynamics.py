"""Iteration and classification, checked on maps whose dynamics are known on paper."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweep import metrics
from sweep.dynamics import (
    CHECK_EVERY,
    OUTCOMES,
    Tolerances,
    classify_starts,
    iterate,
    measure_cycles,
    trajectory,
)

# float64 maps built from exact formulas: radii are right to rounding
EXACT = 1e-9


@pytest.fixture(autouse=True)
def seeded():
    # random starts and points are drawn from a fixed seed: reruns are identical
    torch.manual_seed(0)


def contraction(p: torch.Tensor, rate: float = 0.5):
    """f(x) = p + rate (x - p): one fixed point p, J = rate I."""
    return lambda x: p + rate * (x - p)


def cubic(x: torch.Tensor) -> torch.Tensor:
    """f(x) = x - 0.2 (x^3 - x): fixed points -1, 0, 1; f'(x) = 1.2 - 0.6 x^2.

    f' = 0.6 at +-1 (attracting), 1.2 at 0 (repelling). On (0, sqrt 6) f is
    positive, at most f(sqrt 2) = 0.8 sqrt 2 < sqrt 2, and increasing on
    (0, sqrt 2) with f(x) > x below 1 and < x above: every start in (0, sqrt 6)
    ends at +1; by symmetry every start in (-sqrt 6, 0) ends at -1.
    """
    return x - 0.2 * (x**3 - x)


def polar_cycle(k: int):
    """Rotate by 2 pi / k, pull the radius toward 1 and the angle toward 2 pi j / k.

    r -> 1 + (r - 1) / 2 and theta -> theta + 2 pi / k - sin(k theta) / (2 k): in
    phi = k theta mod 2 pi this is phi -> phi - sin(phi) / 2, attracting at
    phi = 0 (slope 1/2). So the points at angles 2 pi j / k on the unit circle
    form an attracting k-cycle; each step's Jacobian there is (1/2) R(2 pi / k)
    and the product over the orbit is 2^-k I: radius 2^-k.
    """

    def f(x):
        r = x.norm(dim=1, keepdim=True)
        theta = torch.atan2(x[:, 1:], x[:, :1])
        theta = theta + 2 * math.pi / k - torch.sin(k * theta) / (2 * k)
        r = 1 + 0.5 * (r - 1)
        return torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=1)

    return f


def cycle_map(points: torch.Tensor, nxt: torch.Tensor, mats: torch.Tensor):
    """f(x) = sum_j w_j(x) (nxt_j + A_j (x - x_j)), w = softmax of -|x - x_j|^2 / 2.

    The points are >= 10 apart, so near x_j the weights are one-hot to
    exp(-50) ~ 1e-22: f(x_j) = nxt_j and J_f(x_j) = A_j to float64 precision.
    """

    def f(x):
        sq = ((x[:, None, :] - points[None]) ** 2).sum(-1)  # (b, n_points)
        w = torch.softmax(-sq / 2, dim=1)
        moved = torch.einsum("ljk,blk->blj", mats, x[:, None, :] - points[None])
        return torch.einsum("bl,bld->bd", w, nxt[None] + moved)

    return f


def random_orthogonal(d: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    return q


def two_stable_cycles(d: int = 6, length: int = 3):
    """Two stored 3-cycles on 10 e_i; A_j = Q_j / 2 so the product is Q / 8."""
    gen = torch.Generator().manual_seed(0)
    cycles = 10.0 * torch.eye(d, dtype=torch.float64).reshape(2, length, d)
    nxt = cycles.roll(-1, dims=1).reshape(-1, d)
    mats = torch.stack([0.5 * random_orthogonal(d, gen) for _ in range(2 * length)])
    return cycle_map(cycles.reshape(-1, d), nxt, mats), cycles


def mnist_digits(split: str, n: int, side: int) -> torch.Tensor:
    """n real MNIST digits of a split, area-resized to side x side, in [0, 1]."""
    path = Path(os.environ["SWEEP_DATA_DIR"]) / "mnist_subset.npz"
    x = torch.from_numpy(np.load(path)[f"x_{split}"][:n]).double()[:, None] / 255
    return F.interpolate(x, size=(side, side), mode="area").reshape(n, -1)


def test_contraction_point_is_an_attractor_reached_in_known_steps():
    p = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    f, tol = contraction(p), Tolerances()
    (report,) = measure_cycles(f, p[None, None], tol)
    assert report.maps and report.stable
    assert report.spectral_radius == pytest.approx(0.5, rel=EXACT)

    # step m moves by 2^-m |x0 - p|: settled at the first m with that below
    # step_tol * sqrt(d), i.e. m = ceil(log2(|x0 - p| / (step_tol sqrt d)))
    starts = p + 5 * torch.randn(200, 4, dtype=torch.float64)
    out = classify_starts(f, starts, p[None, None], tol)
    assert (out.outcome == "train").all() and (out.target == 0).all()
    dist = (starts - p).norm(dim=1).numpy()
    expected = np.ceil(np.log2(dist / (tol.step_tol * math.sqrt(4))))
    assert np.abs(out.steps - expected).max() <= 2
    # the endpoint is within one more step (half the last one) of p
    assert (out.ends - p).norm(dim=1).max() <= tol.step_tol * math.sqrt(4)
    assert out.spurious == []


def test_cubic_map_basins_are_counted_exactly():
    # grid -2.4 .. 2.4 in steps of 0.05 (inside +-sqrt 6 ~ 2.449): 48 starts
    # below 0 go to -1, 48 above go to +1, and 0 itself is a fixed point
    starts = (torch.arange(-48, 49, dtype=torch.float64) * 0.05)[:, None]
    stored = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)[:, None, None]
    out = classify_starts(cubic, starts, stored)
    assert (out.outcome == "train").all()
    assert np.bincount(out.target, minlength=3).tolist() == [48, 1, 48]
    assert (out.target[:48] == 0).all() and (out.target[49:] == 2).all()

    # 0 is a fixed point but repelling: f'(0) = 1.2; +-1 attract with 0.6
    reports = measure_cycles(cubic, stored)
    assert [r.maps for r in reports] == [True, True, True]
    radii = [r.spectral_radius for r in reports]
    assert radii == pytest.approx([0.6, 1.2, 0.6], rel=EXACT)
    assert [r.stable for r in reports] == [True, False, True]


def test_unstable_fixed_point_and_diverging_starts():
    # f(x) = 2x: 0 is a fixed point with radius 2, and |x_k| = 2^k |x_0| passes
    # diverge_norm * sqrt(d) at k = floor(log2(diverge_norm sqrt(d) / |x_0|)) + 1
    f = lambda x: 2 * x  # noqa: E731 (a map is a one-liner here)
    d, tol = 3, Tolerances()
    zero = torch.zeros(1, 1, d, dtype=torch.float64)
    (report,) = measure_cycles(f, zero, tol)
    assert report.maps and not report.stable
    assert report.spectral_radius == pytest.approx(2.0, rel=EXACT)

    starts = torch.randn(50, d, dtype=torch.float64)
    out = classify_starts(f, starts, zero, tol)
    assert (out.outcome == "diverged").all() and (out.target == -1).all()
    norms = starts.norm(dim=1).numpy()
    expected = np.floor(np.log2(tol.diverge_norm * math.sqrt(d) / norms)) + 1
    assert out.steps.tolist() == expected.astype(int).tolist()


def test_unstored_attracting_cycle_is_one_spurious_cycle():
    k = 5
    starts = 3 * torch.randn(60, 2, dtype=torch.float64)
    stored = torch.tensor([[[5.0, 5.0]]], dtype=torch.float64)  # far from the orbit
    out = classify_starts(polar_cycle(k), starts, stored, Tolerances(max_period=6))
    assert (out.outcome == "spurious_cycle").all() and (out.target == 0).all()
    (attractor,) = out.spurious
    assert attractor.period == k and attractor.n_hits == len(starts)
    assert attractor.spectral_radius == pytest.approx(2.0**-k, rel=1e-6)
    assert attractor.stable
    # the representative lies on the orbit: unit radius at an angle 2 pi j / k
    angle = math.atan2(attractor.point[1], attractor.point[0]) * k / (2 * math.pi)
    assert np.linalg.norm(attractor.point) == pytest.approx(1.0, abs=1e-9)
    assert angle == pytest.approx(round(angle), abs=1e-6)


def test_period_search_stops_at_max_period():
    # with L = 1 the default search stops at period 2, so a period-5 orbit is
    # not found: those starts are honestly "unsettled", not misfiled
    starts = 3 * torch.randn(10, 2, dtype=torch.float64)
    stored = torch.tensor([[[5.0, 5.0]]], dtype=torch.float64)
    out = classify_starts(polar_cycle(5), starts, stored)
    assert (out.outcome == "unsettled").all()
    assert (out.steps == Tolerances().max_steps).all()


def test_stored_stable_cycles_are_reached():
    f, cycles = two_stable_cycles()
    reports = measure_cycles(f, cycles)
    for report in reports:
        # each step has radius 1/2 (orthogonal / 2); the product Q / 8 has 1/8
        assert report.maps and report.stable
        assert report.step_radii == pytest.approx([0.5] * 3, rel=EXACT)
        assert report.spectral_radius == pytest.approx(0.125, rel=EXACT)
        assert report.residuals.max() < EXACT

    # starts ~0.25% away from an element of cycle c follow cycle c; matched at
    # the first check and confirmed at the next, CHECK_EVERY steps later
    gen = torch.Generator().manual_seed(1)
    near = cycles.reshape(-1, 6).repeat(4, 1)  # (24, d): every element 4 times
    starts = near + 1e-2 * torch.randn(near.shape, dtype=torch.float64, generator=gen)
    out = classify_starts(f, starts, cycles)
    assert (out.outcome == "cycle").all()
    assert out.target.tolist() == [0, 0, 0, 1, 1, 1] * 4
    assert (out.steps == 2 * CHECK_EVERY).all()


def test_cycle_seen_only_at_max_steps_is_found_by_the_period_search():
    # starts exactly on the stored cycles, stopped at the first match check
    # (max_steps = CHECK_EVERY) before a second check could confirm them: the
    # period search then finds f^3(x) = x and f(x) at the next element
    f, cycles = two_stable_cycles()
    starts = cycles.reshape(-1, 6)
    out = classify_starts(f, starts, cycles, Tolerances(max_steps=CHECK_EVERY))
    assert out.outcome.tolist() == ["cycle"] * 6
    assert out.target.tolist() == [0, 0, 0, 1, 1, 1]
    assert (out.steps == CHECK_EVERY).all()


def test_cycle_that_maps_but_is_unstable():
    # A_1 = [[.5, 2], [0, .5]], A_2 = [[.5, 0], [2, .5]] each look harmless
    # (radius 1/2), but A_2 A_1 = [[.25, 1], [1, 4.25]] has radius
    # (4.5 + sqrt 20) / 2 ~ 4.49: f walks the cycle, and the cycle repels
    points = torch.tensor([[10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    mats = torch.tensor([[[0.5, 2.0], [0.0, 0.5]], [[0.5, 0.0], [2.0, 0.5]]])
    f = cycle_map(points, points.roll(-1, dims=0), mats.double())
    (report,) = measure_cycles(f, points[None])
    assert report.maps and not report.stable
    assert report.step_radii == pytest.approx([0.5, 0.5], rel=EXACT)
    assert report.spectral_radius == pytest.approx((4.5 + math.sqrt(20)) / 2, rel=EXACT)


def test_unstored_fixed_points_merge_into_distinct_attractors():
    # the cubic map's attractors +-1, with neither passed as a training
    # example: the 96 nonzero grid starts make exactly two spurious attractors
    grid = torch.arange(-48, 49, dtype=torch.float64) * 0.05
    starts = grid[grid != 0][:, None]
    stored = torch.tensor([[[5.0]]], dtype=torch.float64)
    out = classify_starts(cubic, starts, stored)
    assert (out.outcome == "spurious_fixed").all()
    assert [s.point.item() for s in out.spurious] == pytest.approx([-1, 1], abs=1e-5)
    assert [s.n_hits for s in out.spurious] == [48, 48]
    assert [s.spectral_radius for s in out.spurious] == pytest.approx([0.6] * 2, 1e-4)
    assert all(s.stable and s.period == 1 for s in out.spurious)
    assert out.target.tolist() == [0] * 48 + [1] * 48


def test_real_digits_recalled_by_a_nearest_neighbour_memory():
    # f(x) = (x + x_nn(x)) / 2 with x_nn the nearest stored digit: halving the
    # distance to the nearest keeps it nearest, so every start ends on its
    # nearest stored digit; J = I / 2 wherever the nearest is unique
    train = mnist_digits("train", 6, 14)
    tests = mnist_digits("test", 40, 14)

    def f(x):
        return 0.5 * x + 0.5 * train[torch.cdist(x, train).argmin(dim=1)]

    reports = measure_cycles(f, train[:, None])
    assert all(r.stable for r in reports)
    assert [r.spectral_radius for r in reports] == pytest.approx([0.5] * 6)
    out = classify_starts(f, tests, train[:, None])
    assert (out.outcome == "train").all()
    assert out.target.tolist() == torch.cdist(tests, train).argmin(dim=1).tolist()


def test_results_do_not_depend_on_batch_size():
    # starts drop out and are refilled at different times in different batch
    # sizes; each start's fate must not change (these maps act row by row)
    cubic_starts = (torch.arange(-48, 49, dtype=torch.float64) * 0.05)[:, None]
    cubic_stored = torch.tensor([[[1.0]]], dtype=torch.float64)
    f, cycles = two_stable_cycles()
    near = cycles.reshape(-1, 6) + 1e-2
    cases = [(cubic, cubic_starts, cubic_stored), (f, near, cycles)]
    for g, starts, stored in cases:
        one = classify_starts(g, starts, stored, batch_size=1)
        many = classify_starts(g, starts, stored, batch_size=4096)
        assert one.outcome.tolist() == many.outcome.tolist()
        assert one.target.tolist() == many.target.tolist()
        assert one.steps.tolist() == many.steps.tolist()
        assert torch.allclose(one.ends, many.ends, rtol=0, atol=1e-12)
        assert len(one.spurious) == len(many.spurious)


def test_finished_starts_drop_out_of_the_batch():
    # each start is evaluated only until the check after it settles: rows
    # computed = sum over starts of its steps rounded up to CHECK_EVERY
    p = torch.zeros(3, dtype=torch.float64)
    starts = torch.logspace(-3, 3, 40, dtype=torch.float64)[:, None] * torch.ones(3)
    rows = []

    def f(x):
        rows.append(len(x))
        return contraction(p)(x)

    ends, steps, status = iterate(f, starts, 1000, 1e-6)
    assert (status == "settled").all()
    assert sum(rows) == int((np.ceil(steps / CHECK_EVERY) * CHECK_EVERY).sum())
    assert steps.min() < steps.max()  # the starts really do finish apart


def test_iterate_reports_every_status():
    # cubic: 0.5 settles; 1e6 overshoots to -2e17 then diverges; 2.0 with one
    # step allowed is unsettled
    starts = torch.tensor([[0.5], [1e6], [2.0]], dtype=torch.float64)
    ends, steps, status = iterate(cubic, starts[:2], 1000, 1e-6)
    assert status.tolist() == ["settled", "diverged"]
    assert ends[0].item() == pytest.approx(1.0, abs=1e-5) and steps[1] == 1
    _, steps, status = iterate(cubic, starts[2:], 1, 1e-6)
    assert status.tolist() == ["unsettled"] and steps.tolist() == [1]


def test_outcome_names_are_the_metric_names():
    # results are counted per outcome under sweep.metrics' names: a name that
    # differed would silently count zero starts
    assert OUTCOMES == metrics.OUTCOMES


def test_trajectory_is_powers_of_a_diagonal_map():
    # f(x) = D x has f^k(x0) = D^k x0, any order of k, 0 being x0 itself
    diag = torch.tensor([0.5, -2.0, 1.5], dtype=torch.float64)
    x0 = torch.randn(4, 3, dtype=torch.float64)
    ks = [0, 3, 1, 10, 3]
    out = trajectory(lambda x: x * diag, x0, ks)
    assert out.shape == (4, len(ks), 3)
    expected = torch.stack([x0 * diag**k for k in ks], dim=1)
    assert torch.allclose(out, expected, rtol=1e-13, atol=0)


def test_bad_inputs_are_one_line_errors():
    f = contraction(torch.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(n_cycles, L, d\)"):
        classify_starts(f, torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        classify_starts(f, torch.zeros(3, 5), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="match_tol=0 must be > 0"):
        Tolerances(match_tol=0)
