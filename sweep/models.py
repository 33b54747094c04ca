"""The networks whose training data may end up stored as attractors.

Every model maps FLAT vectors, (b, D) -> (b, D) with D = c * h * w, so that training
and the dynamics (iteration, Jacobians) never care about the architecture: x_{k+1} =
f(x_k) needs input and output in the same space.

- "fc": fully connected, `depth` hidden layers of `width` units, bias on, linear
  output layer (PAPER.md: 11 x 256, SELU for figs 3-4 and 6-9).
- "conv": the convolutional autoencoder of fig 10, 32 -> 1 -> 32 spatially.
- "unet": a small U-Net without batch norm (fig 5).

conv and unet use the named nonlinearity everywhere the paper has LeakyReLU; the conv
sweeps pass "leaky_relu". `depth` is ignored by both (their depth is fixed).
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict

import torch
from torch import nn

from sweep.nonlinearities import ModelError, canonical_name, get_nonlinearity

__all__ = [
    "ModelError",
    "MODELS",
    "INITS",
    "build_model",
    "initialize",
    "output_layer",
    "estimate_bytes",
    "n_params",
]

MODELS = ("fc", "conv", "unet")
INITS = (
    "default",
    "uniform",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
)

CONV_STAGES = 5  # fig 10: five stride-2 convs take 32x32 to 1x1, five upsamplings back
UNET_LEVELS = 4  # resolutions 32, 16, 8, 4 for a 32x32 input
KERNEL = 3  # every conv of fig 10 is 3x3


def build_model(
    model: str,
    shape: tuple[int, int, int],
    *,
    width: int,
    depth: int,
    nonlinearity: str,
) -> nn.Module:
    """A flat-in, flat-out network for images of `shape` = (c, h, w)."""
    # check everything before building, so a bad config fails with one line
    if model not in MODELS:
        raise ModelError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    c, h, w = _check_shape(shape)
    for name, value in (("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{name}={value!r} must be an integer >= 1")
    canonical_name(nonlinearity)

    if model == "fc":
        return _fc(c * h * w, width, depth, nonlinearity)
    if model == "conv":
        _check_divisible(model, (h, w), 2**CONV_STAGES)
        body = _conv_autoencoder(c, width, nonlinearity)
    else:
        _check_divisible(model, (h, w), 2 ** (UNET_LEVELS - 1))
        body = OrderedDict(unet=UNet(c, width, UNET_LEVELS, nonlinearity))
    # flat (b, D) -> image (b, c, h, w) -> flat again
    return nn.Sequential(
        OrderedDict(unflatten=nn.Unflatten(1, (c, h, w)), **body, flatten=nn.Flatten(1))
    )


def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    # accept any integer sequence (a torch.Size, numpy ints), return a plain tuple
    try:
        c, h, w = (operator.index(s) for s in shape)
    except (TypeError, ValueError):
        c = h = w = 0
    if min(c, h, w) < 1:
        raise ModelError(f"shape={shape!r} must be (channels, height, width) >= 1")
    return c, h, w


def _check_divisible(model: str, hw: tuple[int, int], factor: int) -> None:
    # each stride-2 stage halves the side and each upsampling doubles it; a side that
    # does not divide evenly would come back a different size
    if hw[0] % factor or hw[1] % factor:
        raise ModelError(
            f"model={model} needs height and width divisible by {factor}, "
            f"got {hw[0]}x{hw[1]}; resize the images (e.g. image_size=32)"
        )


def _fc(dim: int, width: int, depth: int, nonlinearity: str) -> nn.Sequential:
    # Linear(D, w), act, [Linear(w, w), act] * (depth - 1), Linear(w, D)
    layers: list[nn.Module] = [nn.Linear(dim, width), get_nonlinearity(nonlinearity)]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), get_nonlinearity(nonlinearity)]
    layers.append(nn.Linear(width, dim))
    return nn.Sequential(*layers)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, KERNEL, stride=stride, padding=KERNEL // 2)


def _upsample() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)


def _conv_autoencoder(c: int, width: int, nonlinearity: str) -> OrderedDict:
    """Fig 10: five stride-2 convs down, five (conv, act, upsample) blocks up."""
    act = get_nonlinearity
    encoder: list[nn.Module] = []
    for i in range(CONV_STAGES):
        encoder += [_conv(c if i == 0 else width, width, stride=2), act(nonlinearity)]
    decoder: list[nn.Module] = []
    for _ in range(CONV_STAGES):
        decoder += [_conv(width, width), act(nonlinearity), _upsample()]
    # then two width-channel convs and a last conv back to c channels (no activation:
    # the output is a linear read-out, like the fc nets' last layer)
    for _ in range(2):
        decoder += [_conv(width, width), act(nonlinearity)]
    decoder.append(_conv(width, c))
    return OrderedDict(encoder=nn.Sequential(*encoder), decoder=nn.Sequential(*decoder))


def _double_conv(c_in: int, c_out: int, nonlinearity: str) -> nn.Sequential:
    return nn.Sequential(
        _conv(c_in, c_out),
        get_nonlinearity(nonlinearity),
        _conv(c_out, c_out),
        get_nonlinearity(nonlinearity),
    )


class UNet(nn.Module):
    """A U-Net on (b, c, h, w) images: `levels` resolutions, channels doubling.

    Down: two 3x3 convs per level, then a stride-2 3x3 conv to halve the side. Up:
    bilinear 2x upsampling, concatenation with the skip of that level, two 3x3 convs.
    No batch norm: it would make f(x) depend on the other examples of the batch, and
    iterating x_{k+1} = f(x_k) needs f to be one fixed map.
    """

    def __init__(self, channels: int, width: int, levels: int, nonlinearity: str):
        super().__init__()
        widths = [width * 2**i for i in range(levels)]  # channels per level
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c_in = channels
        for i, w in enumerate(widths):
            self.down.append(_double_conv(c_in, w, nonlinearity))
            if i < levels - 1:
                self.pool.append(
                    nn.Sequential(_conv(w, w, stride=2), get_nonlinearity(nonlinearity))
                )
            c_in = w
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i], nonlinearity)
            for i in reversed(range(levels - 1))
        )
        self.upsample = _upsample()
        # the output layer is registered last, so output_layer() finds it
        self.out = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # down path, keeping each level's features for the skip connections
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pool):
                skips.append(x)
                x = self.pool[i](x)
        # up path: upsample, concatenate the skip of the same resolution, convolve
        for block in self.up:
            x = block(torch.cat([self.upsample(x), skips.pop()], dim=1))
        return self.out(x)


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def output_layer(model: nn.Module) -> nn.Module:
    """The output layer: the last Linear or Conv2d in module registration order."""
    layers = _layers(model)
    if not layers:
        raise ModelError("model has no Linear or Conv2d layer; nothing to initialize")
    return layers[-1]


def initialize(
    model: nn.Module,
    init: str,
    scale: float = 0.0,
    *,
    zero_last: bool = False,
    generator: torch.Generator | None = None,
) -> None:
    """Re-initialize the Linear and Conv2d layers of `model` in place.

    "default" keeps PyTorch's init; "uniform" draws weights AND biases from
    U[-scale, scale] (the paper's U[-a, a], figs 4 and 13); "normal" draws both from
    N(0, scale); xavier_* and kaiming_* set weights (kaiming with PyTorch's default
    gain, sqrt(2)) and zero the biases, ignoring `scale`. `zero_last` then zeroes the
    output layer's weight and bias, so f = 0 at the start of training.
    """
    # check the scheme and its scale
    if init not in INITS:
        raise ModelError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if init in ("uniform", "normal") and not (math.isfinite(scale) and scale > 0):
        raise ModelError(f"init={init} needs init_scale > 0, got {scale!r}; set it")

    last = output_layer(model)  # raises for a model without layers to initialize

    with torch.no_grad():
        # draw every layer from the scheme
        if init != "default":
            for layer in _layers(model):
                _init_layer(layer, init, scale, generator)
        # zeroing the read-out makes training start from f = 0 for any scheme
        if zero_last:
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()


def _init_layer(
    layer: nn.Module, init: str, scale: float, gen: torch.Generator | None
) -> None:
    init_ = nn.init
    if init == "uniform":
        for p in (layer.weight, layer.bias):
            if p is not None:
                init_.uniform_(p, -scale, scale, generator=gen)
        return
    if init == "normal":
        for p in (layer.weight, layer.bias):
            if p is not None:
                init_.normal_(p, 0.0, scale, generator=gen)
        return
    draw = {
        "xavier_uniform": init_.xavier_uniform_,
        "xavier_normal": init_.xavier_normal_,
        "kaiming_uniform": init_.kaiming_uniform_,
        "kaiming_normal": init_.kaiming_normal_,
    }[init]
    draw(layer.weight, generator=gen)
    if layer.bias is not None:
        init_.zeros_(layer.bias)


# full-batch training with Adam holds each parameter 4 times (value, gradient, two
# moments); autograd keeps about 3 tensors per layer output (the output, its gradient,
# and an intermediate for compound nonlinearities such as x + sin(10x)/5)
PARAM_COPIES = 4
ACTIVATION_COPIES = 3
FLOAT_BYTES = 4


def estimate_bytes(
    model: str,
    shape: tuple[int, int, int],
    *,
    width: int,
    depth: int,
    n_train: int,
) -> int:
    """A rough upper estimate of the memory a full-batch float32 training run needs.

    Builds the model on the meta device (no memory, no compute) and counts its
    parameters and every layer's output for a batch of `n_train`.
    """
    # build and run on "meta": shapes only
    with torch.device("meta"):
        net = build_model(model, shape, width=width, depth=depth, nonlinearity="selu")
        x = torch.empty(n_train, math.prod(shape))  # (n_train, D)
    activations = 0

    def count(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal activations
        activations += output.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    net(x)
    for handle in handles:
        handle.remove()

    # parameters, activations, and the inputs and targets themselves
    values = PARAM_COPIES * n_params(net) + ACTIVATION_COPIES * activations
    values += 2 * x.numel()
    return values * FLOAT_BYTES


def n_params(model: nn.Module) -> int:
    """The number of scalar parameters of `model`."""
    return sum(p.numel() for p in model.parameters())


def initial_model(cfg, shape: tuple[int, ...]) -> nn.Module:
    """The network a trial starts from: built, then initialized from cfg.seed.

    `cfg` is a `sweep.config.TrialConfig` (not imported here: config imports
    this module). PyTorch's default init draws from the global generator, so
    the caller seeds that with cfg.seed first, as `sweep.trial` does.
    """
    model = build_model(
        cfg.model,
        shape,
        width=cfg.width,
        depth=cfg.depth,
        nonlinearity=cfg.nonlinearity,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    initialize(
        model, cfg.init, cfg.init_scale, zero_last=cfg.zero_last, generator=generator
    )
    return model
