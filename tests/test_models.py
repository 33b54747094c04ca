"""Nonlinearities, architectures and initializations, checked against hand values."""

import math

import pytest
import torch
from torch import nn

from sweep.models import (
    INITS,
    ModelError,
    build_model,
    estimate_bytes,
    initialize,
    n_params,
    output_layer,
)
from sweep.nonlinearities import ALIASES, NONLINEARITIES, get_nonlinearity

# SELU's constants (Klambauer et al. 2017), written out rather than taken from torch
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# every nonlinearity, written by hand with the math module
BY_HAND = {
    "relu": lambda x: max(x, 0.0),
    "leaky_relu": lambda x: x if x > 0 else 0.01 * x,
    "selu": lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * (math.exp(x) - 1)),
    "swish": lambda x: x / (1 + math.exp(-x)),
    "tanh": math.tanh,
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)),
    "identity": lambda x: x,
    "sin1": lambda x: x + math.sin(x),
    "sin1_half": lambda x: x + math.sin(x) / 2,
    "sin4_half": lambda x: x + math.sin(4 * x) / 2,
    "sin10_fifth": lambda x: x + math.sin(10 * x) / 5,
    "sin10_tenth": lambda x: x + math.sin(10 * x) / 10,
    "cos_minus": lambda x: math.cos(x) - x,
    "sin5_minus": lambda x: x - 0.1 * math.sin(5 * x),
}
POINTS = [-1.3, -0.2, 0.0, 0.3, 2.0]
VALUE_TOL = 1e-12  # float64 evaluation of the same formula


def test_every_nonlinearity_has_a_hand_formula():
    # a name added without a hand check would otherwise go untested
    assert set(NONLINEARITIES) == set(BY_HAND)


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_nonlinearity_matches_its_formula(name):
    # e.g. sin10_fifth(0.3) = 0.3 + sin(3)/5: the module must compute the formula
    # of its docstring at points on both sides of 0
    got = get_nonlinearity(name)(torch.tensor(POINTS, dtype=torch.float64))
    want = torch.tensor([BY_HAND[name](x) for x in POINTS], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=VALUE_TOL)


@pytest.mark.parametrize("formula", sorted(ALIASES))
def test_formula_spellings_are_aliases(formula):
    # "x+sin(10x)/5" and "x + sin(10x)/5" must build the same map as "sin10_fifth"
    x = torch.tensor(POINTS, dtype=torch.float64)
    spaced = formula.replace("+", " + ")
    want = get_nonlinearity(ALIASES[formula])(x)
    torch.testing.assert_close(get_nonlinearity(formula)(x), want, rtol=0, atol=0)
    torch.testing.assert_close(get_nonlinearity(spaced)(x), want, rtol=0, atol=0)


def test_unknown_nonlinearity_names_it_and_the_choices():
    with pytest.raises(
        ModelError, match=r"unknown nonlinearity 'selu2'.*relu.*sin5_minus"
    ):
        get_nonlinearity("selu2")
    # an fc model checks its nonlinearity before building anything
    with pytest.raises(ValueError, match="unknown nonlinearity 'selu2'"):
        build_model("fc", (1, 7, 7), width=4, depth=1, nonlinearity="selu2")


@pytest.mark.parametrize(
    "model, shape",
    [
        ("fc", (1, 14, 14)),
        ("conv", (3, 32, 32)),
        ("unet", (3, 32, 32)),
        ("conv", (1, 32, 32)),
    ],
)
def test_models_are_flat_in_flat_out(model, shape):
    # iteration x_{k+1} = f(x_k) needs (b, D) -> (b, D), D = c*h*w, for every model
    net = build_model(model, shape, width=8, depth=2, nonlinearity="leaky_relu")
    d = math.prod(shape)
    assert net(torch.rand(3, d)).shape == (3, d)


def test_fc_layers_and_widths():
    # depth 3 x width 32 on D = 49: Linear(49, 32), act, 2 x [Linear(32, 32), act],
    # Linear(32, 49), bias on everywhere, nothing after the last Linear
    net = build_model("fc", (1, 7, 7), width=32, depth=3, nonlinearity="selu")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [(49, 32), (32, 32), (32, 32), (32, 49)]
    assert all(m.bias is not None for m in linears)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "SELU"] * 3 + ["Linear"]
    # parameters by hand: weights plus biases of each layer
    assert n_params(net) == (49 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 49 + 49)


def test_conv_autoencoder_goes_32_to_1_to_32():
    # fig 10: five stride-2 convs halve 32 to 1; five upsamplings double it back;
    # two more convs and a read-out conv keep 32x32; channels `width`, then c
    net = build_model("conv", (3, 32, 32), width=8, depth=1, nonlinearity="leaky_relu")
    sizes: list[tuple[str, tuple[int, ...]]] = []
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Upsample)):
            layer.register_forward_hook(
                lambda m, i, o: sizes.append((type(m).__name__, tuple(o.shape[1:])))
            )
    net(torch.rand(2, 3 * 32 * 32))
    encoder = [(c, s) for c, s in sizes[:5]]
    assert encoder == [("Conv2d", (8, s, s)) for s in (16, 8, 4, 2, 1)]
    ups = [s for c, s in sizes if c == "Upsample"]
    assert ups == [(8, s, s) for s in (2, 4, 8, 16, 32)]
    convs = [s for c, s in sizes if c == "Conv2d"]
    assert len(convs) == 5 + 5 + 2 + 1
    assert convs[-3:] == [(8, 32, 32), (8, 32, 32), (3, 32, 32)]
    assert all(isinstance(m, nn.LeakyReLU) for m in net.encoder[1::2])


def test_unet_has_no_batch_norm_and_treats_examples_independently():
    # batch norm would make f(x) depend on the rest of the batch; f must be one map
    net = build_model("unet", (3, 32, 32), width=8, depth=1, nonlinearity="leaky_relu")
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in net.modules())
    batch = torch.rand(5, 3 * 32 * 32)
    torch.testing.assert_close(net(batch)[:1], net(batch[:1]), rtol=1e-5, atol=1e-6)
    # the same check does catch batch dependence: a batch-norm net in training mode
    bn = nn.Sequential(nn.Linear(3 * 32 * 32, 8), nn.BatchNorm1d(8))
    assert not torch.allclose(bn(batch)[:2], bn(batch[:2]), atol=1e-3)


def test_unet_uses_skips_at_every_level():
    # levels 32, 16, 8, 4: the up path concatenates a skip of the same resolution,
    # so each up block takes the channels of the level below plus its own
    net = build_model("unet", (1, 32, 32), width=4, depth=1, nonlinearity="relu")
    unet = net.unet
    assert [b[0].in_channels for b in unet.up] == [32 + 16, 16 + 8, 8 + 4]
    assert output_layer(net) is unet.out and unet.out.out_channels == 1


@pytest.mark.parametrize(
    "model, shape", [("fc", (1, 14, 14)), ("conv", (1, 32, 32)), ("unet", (3, 32, 32))]
)
def test_zero_last_makes_the_output_zero(model, shape):
    # with the read-out layer's weight and bias zero, f(x) = 0 for every x, while
    # the layers before it keep their init
    net = build_model(model, shape, width=8, depth=2, nonlinearity="selu")
    initialize(net, "default", zero_last=True)
    out = net(torch.rand(4, math.prod(shape)))
    assert torch.count_nonzero(out) == 0
    first = next(m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert torch.count_nonzero(first.weight) == first.weight.numel()


def _weights(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_uniform_init_fills_minus_a_to_a():
    # U[-a, a] has std a / sqrt(3); with ~120k draws the sample std is within 1%
    a = 0.05
    net = build_model("fc", (1, 14, 14), width=256, depth=2, nonlinearity="selu")
    initialize(net, "uniform", a, generator=torch.Generator().manual_seed(0))
    w = _weights(net)  # weights and biases alike (the paper's U[-a, a])
    assert w.abs().max() <= a
    assert w.abs().max() > 0.999 * a  # reaches the ends, not a narrower law
    assert w.std().item() == pytest.approx(a / math.sqrt(3), rel=0.01)
    assert abs(w.mean().item()) < 0.01 * a


def test_normal_and_fan_based_inits_have_their_stds():
    # N(0, s) has std s; xavier_normal std sqrt(2 / (fan_in + fan_out)); kaiming_normal
    # (gain sqrt(2), fan_in) std sqrt(2 / fan_in); the fan-based ones zero the biases
    net = build_model("fc", (1, 16, 16), width=512, depth=2, nonlinearity="selu")
    hidden = net[2]  # Linear(512, 512)
    cases = {
        "normal": 0.03,
        "xavier_normal": math.sqrt(2 / (512 + 512)),
        "kaiming_normal": math.sqrt(2 / 512),
        "xavier_uniform": math.sqrt(2 / (512 + 512)),
        "kaiming_uniform": math.sqrt(2 / 512),
    }
    for init, std in cases.items():
        initialize(net, init, 0.03, generator=torch.Generator().manual_seed(1))
        assert hidden.weight.std().item() == pytest.approx(std, rel=0.01), init
        if init != "normal":
            assert torch.count_nonzero(hidden.bias) == 0, init


def test_init_is_reproducible_from_its_generator_and_default_is_untouched():
    def drawn(seed: int) -> torch.Tensor:
        net = build_model("fc", (1, 7, 7), width=16, depth=2, nonlinearity="selu")
        initialize(net, "uniform", 0.1, generator=torch.Generator().manual_seed(seed))
        return _weights(net)

    # the same seed gives the same draws, another seed other draws
    assert torch.equal(drawn(3), drawn(3))
    assert not torch.equal(drawn(3), drawn(4))
    # "default" keeps PyTorch's init as it was
    net = build_model("fc", (1, 7, 7), width=16, depth=2, nonlinearity="selu")
    before = _weights(net).clone()
    initialize(net, "default")
    assert torch.equal(_weights(net), before)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: build_model(
                "mlp", (1, 7, 7), width=4, depth=1, nonlinearity="relu"
            ),
            r"unknown model 'mlp'; choose one of fc, conv, unet",
        ),
        (
            lambda: build_model("fc", (1, 7, 7), width=0, depth=1, nonlinearity="relu"),
            r"width=0 must be an integer >= 1",
        ),
        (
            lambda: build_model("fc", (1, 7, 7), width=4, depth=0, nonlinearity="relu"),
            r"depth=0 must be an integer >= 1",
        ),
        (
            lambda: build_model(
                "conv", (1, 28, 28), width=4, depth=1, nonlinearity="relu"
            ),
            r"model=conv needs height and width divisible by 32, got 28x28",
        ),
        (
            lambda: build_model(
                "unet", (1, 28, 28), width=4, depth=1, nonlinearity="relu"
            ),
            r"model=unet needs height and width divisible by 8",
        ),
        (
            lambda: initialize(nn.Linear(2, 2), "orthogonal"),
            r"unknown init 'orthogonal'; choose one of " + ", ".join(INITS),
        ),
        (
            lambda: initialize(nn.Linear(2, 2), "uniform", 0.0),
            r"init=uniform needs init_scale > 0, got 0.0",
        ),
        (
            lambda: initialize(nn.Linear(2, 2), "normal", -1.0),
            r"init=normal needs init_scale > 0",
        ),
    ],
)
def test_bad_input_raises_a_one_line_model_error(call, message):
    with pytest.raises(ModelError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_estimate_bytes_counts_parameters_and_activations():
    # fc on D = 196, width 256, depth 3: P parameters by hand; a batch of n keeps
    # 6 hidden outputs of 256 (3 Linear + 3 SELU) and one of 196 per example;
    # 4 copies of P (value, grad, 2 Adam moments), 3 of each activation, plus the
    # (n, D) inputs and targets, 4 bytes each
    d, w, n = 196, 256, 100
    p = (d * w + w) + 2 * (w * w + w) + (w * d + d)
    want = 4 * (4 * p + 3 * n * (6 * w + d) + 2 * n * d)
    assert estimate_bytes("fc", (1, 14, 14), width=w, depth=3, n_train=n) == want
    # a conv model is sized without building it in memory: 10,000 CIFAR images at
    # width 256 need tens of GiB, which the estimate must say rather than allocate
    big = estimate_bytes("conv", (3, 32, 32), width=256, depth=1, n_train=10_000)
    assert big > 50 * 2**30
