"""Spectral radii of Jacobians, checked on maps whose spectra are known on paper."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweep.spectra import cycle_radii, cycle_spectral_radius, jacobian, spectral_radius

# dense and ARPACK both work in float64; on exact linear maps they agree to this
EXACT = 1e-9
# the brief's bar for dense vs matfree on a float64 network
AGREE = 1e-4


@pytest.fixture(autouse=True)
def seeded():
    # random starts and points are drawn from a fixed seed: reruns are identical
    torch.manual_seed(0)


def linear(matrix: torch.Tensor):
    """f(x) = M x on batches: J_f = M everywhere."""
    return lambda x: x @ matrix.T


def rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def cycle_map(points: torch.Tensor, mats: torch.Tensor, width: float = 1.0):
    """f(x) = sum_j w_j(x) (x_{j+1} + A_j (x - x_j)), w = softmax of -|x - x_j|^2.

    With points ~10 widths apart the weights are one-hot to exp(-50) ~ 1e-22
    near each x_j, so f(x_j) = x_{j+1} and J_f(x_j) = A_j to float64 precision.
    """
    nxt = points.roll(-1, dims=0)

    def f(x):
        sq = ((x[:, None, :] - points[None]) ** 2).sum(-1)  # (b, L)
        w = torch.softmax(-sq / (2 * width**2), dim=1)
        moved = torch.einsum("ljk,blk->blj", mats, x[:, None, :] - points[None])
        return torch.einsum("bl,bld->bd", w, nxt[None] + moved)

    return f


def separated_points(n: int, d: int) -> torch.Tensor:
    # distinct scaled basis vectors: pairwise 10 * sqrt(2) apart
    return 10.0 * torch.eye(d, dtype=torch.float64)[:n]


@pytest.mark.parametrize("method", ["dense", "matfree"])
def test_diagonal_map_radius_is_largest_entry(method):
    # the eigenvalues of a diagonal matrix are its entries
    entries = [0.3, -0.9, 0.5, 0.1, -0.2, 0.7, 0.05, 0.6, -0.4, 0.8] * 3
    diag = torch.tensor(entries, dtype=torch.float64)
    f = lambda x: x * diag  # noqa: E731 (a map is a one-liner here)
    x = torch.randn(len(diag), dtype=torch.float64)
    assert spectral_radius(f, x, method) == pytest.approx(0.9, rel=EXACT)


@pytest.mark.parametrize("method", ["dense", "matfree"])
def test_rotation_times_scale_radius_is_the_scale(method):
    # r R(theta) has eigenvalues r e^{+-i theta}: a complex pair of modulus r;
    # three blocks so ARPACK must pick the largest pair among three
    blocks = [0.9 * rotation(0.3), 0.7 * rotation(1.1), 0.5 * rotation(2.0)]
    f = linear(torch.block_diag(*blocks))
    assert spectral_radius(f, torch.zeros(6).double(), method) == pytest.approx(
        0.9, rel=EXACT
    )


def test_non_normal_jacobian_radius_is_not_its_top_singular_value():
    # [[0.5, 10], [0, 0.5]] is triangular: both eigenvalues are 0.5, so iterating
    # it contracts, yet its top singular value is ~10: only eigenvalues decide
    matrix = torch.tensor([[0.5, 10.0], [0.0, 0.5]], dtype=torch.float64)
    f = linear(matrix)
    top_singular = torch.linalg.svdvals(jacobian(f, torch.ones(2).double()))[0]
    assert top_singular > 10
    assert spectral_radius(f, torch.ones(2).double()) == pytest.approx(0.5, rel=EXACT)


def test_tanh_jacobian_at_zero_is_the_weight_matrix():
    # d/dx tanh(W x) = diag(1 - tanh^2(W x)) W, which is W at x = 0; W is upper
    # triangular, so its eigenvalues are its diagonal and the radius is 0.7
    torch.manual_seed(0)
    d = 12
    diag = torch.linspace(-0.7, 0.6, d, dtype=torch.float64)
    weight = torch.triu(torch.randn(d, d, dtype=torch.float64), 1) + torch.diag(diag)
    f = lambda x: torch.tanh(x @ weight.T)  # noqa: E731
    zero = torch.zeros(d, dtype=torch.float64)
    assert torch.allclose(jacobian(f, zero), weight, atol=1e-14)
    for method in ("dense", "matfree"):
        assert spectral_radius(f, zero, method) == pytest.approx(0.7, rel=EXACT)


def mnist_points(n: int, side: int) -> torch.Tensor:
    """n real MNIST training digits, area-resized to side x side, in [0, 1]."""
    path = Path(os.environ["SWEEP_DATA_DIR"]) / "mnist_subset.npz"
    x = torch.from_numpy(np.load(path)["x_train"][:n]).double()[:, None] / 255
    return F.interpolate(x, size=(side, side), mode="area").reshape(n, -1)


def selu_mlp(d: int, width: int, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(d, width), torch.nn.SELU()]
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(width, width), torch.nn.SELU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, d)).double().eval()


def test_dense_and_matfree_agree_on_a_selu_network_at_real_digits():
    # two independent routes to the same number (full eigendecomposition vs
    # Arnoldi on JVPs) must agree on a float64 net, here at d = 17 * 17 = 289
    points = mnist_points(3, 17)
    net = selu_mlp(points.shape[1], width=128, depth=4)
    for x in points[:2]:
        dense = spectral_radius(net, x, "dense")
        matfree = spectral_radius(net, x, "matfree")
        assert dense > 0
        assert matfree == pytest.approx(dense, rel=AGREE)
    dense = cycle_spectral_radius(net, points, "dense")
    matfree = cycle_spectral_radius(net, points, "matfree")
    assert matfree == pytest.approx(dense, rel=AGREE)
    # and "auto" with d under dense_max_dim is the dense answer itself
    assert cycle_spectral_radius(net, points) == dense


def test_product_stable_though_each_factor_is_not():
    # J(x_1) = diag(2, 1/4), J(x_2) = diag(1/4, 2): each radius 2, but the
    # product is diag(1/2, 1/2): a period-2 orbit through them attracts
    mats = torch.stack([torch.diag(torch.tensor(v)) for v in ([2, 0.25], [0.25, 2])])
    f = cycle_map(separated_points(2, 2), mats.double())
    step_radii, radius = cycle_radii(f, separated_points(2, 2))
    assert step_radii == pytest.approx([2.0, 2.0], rel=EXACT)
    assert radius == pytest.approx(0.5, rel=EXACT)


@pytest.mark.parametrize("method", ["dense", "matfree"])
def test_product_unstable_though_each_factor_is_stable(method):
    # A_1 = [[.5, 2], [0, .5]] and A_2 = [[.5, 0], [2, .5]] both have radius 0.5,
    # but A_2 A_1 = [[.25, 1], [1, 4.25]] has eigenvalues (4.5 +- sqrt(20)) / 2;
    # padded with 0.1 I to d = 6 so ARPACK (which needs d >= 4) is really used
    pad = 0.1 * torch.eye(4, dtype=torch.float64)
    a1 = torch.block_diag(torch.tensor([[0.5, 2.0], [0.0, 0.5]]).double(), pad)
    a2 = torch.block_diag(torch.tensor([[0.5, 0.0], [2.0, 0.5]]).double(), pad)
    points = separated_points(2, 6)
    f = cycle_map(points, torch.stack([a1, a2]))
    assert spectral_radius(f, points[0], method) == pytest.approx(0.5, rel=EXACT)
    expected = (4.5 + math.sqrt(20)) / 2
    assert cycle_spectral_radius(f, points, method) == pytest.approx(
        expected, rel=EXACT
    )
    # order matters for the points, not for the radius: A_1 A_2 is similar
    assert cycle_spectral_radius(f, points.flip(0), method) == pytest.approx(
        expected, rel=EXACT
    )


@pytest.mark.parametrize("method", ["dense", "matfree"])
def test_product_is_taken_in_cycle_order(method):
    # for L = 3 the reversed product A_1 A_2 A_3 is not similar to A_3 A_2 A_1,
    # so only the chain-rule order J(x_3) J(x_2) J(x_1) gives numpy's answer
    gen = torch.Generator().manual_seed(3)
    mats = torch.randn(3, 5, 5, dtype=torch.float64, generator=gen)
    points = separated_points(3, 5)
    f = cycle_map(points, mats)
    ordered = np.abs(np.linalg.eigvals((mats[2] @ mats[1] @ mats[0]).numpy())).max()
    reverse = np.abs(np.linalg.eigvals((mats[0] @ mats[1] @ mats[2]).numpy())).max()
    assert abs(ordered - reverse) > 0.1 * ordered
    assert cycle_spectral_radius(f, points, method) == pytest.approx(ordered, rel=EXACT)


def test_cycle_of_length_one_is_the_point_radius():
    f = linear(torch.diag(torch.tensor([0.2, -0.6, 0.4], dtype=torch.float64)))
    x = torch.ones(1, 3, dtype=torch.float64)
    assert cycle_spectral_radius(f, x) == spectral_radius(f, x[0])
    assert spectral_radius(f, x[0]) == pytest.approx(0.6, rel=EXACT)


def test_non_finite_jacobian_gives_nan():
    # sqrt has an infinite derivative at 0: no spectrum, and nan < 1 is False,
    # so such a point is never counted as an attractor
    f = torch.sqrt
    for method in ("dense", "matfree"):
        assert math.isnan(spectral_radius(f, torch.zeros(8), method))


def test_bad_method_and_shapes_are_one_line_errors():
    f = linear(torch.eye(3))
    with pytest.raises(ValueError, match="unknown spectral method 'eig'; choose one"):
        spectral_radius(f, torch.zeros(3), "eig")
    with pytest.raises(ValueError, match=r"shape \(d,\)"):
        spectral_radius(f, torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(L, d\)"):
        cycle_spectral_radius(f, torch.zeros(3))
