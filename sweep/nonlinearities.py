"""The elementwise nonlinearities the sweeps compare, by URL- and shell-safe name.

Besides the usual activations, the authors' code uses perturbed identities such as
x + sin(10x)/5 (PAPER.md, fig 12). Each gets a short canonical name here; the formula
spellings are accepted as aliases, so `get_nonlinearity("x+sin(10x)/5")` and
`get_nonlinearity("sin10_fifth")` build the same thing.

| name          | formula           |   | name          | formula           |
|---------------|-------------------|---|---------------|-------------------|
| `sin1`        | x + sin(x)        |   | `sin10_fifth` | x + sin(10x) / 5  |
| `sin1_half`   | x + sin(x) / 2    |   | `sin10_tenth` | x + sin(10x) / 10 |
| `sin4_half`   | x + sin(4x) / 2   |   | `cos_minus`   | cos(x) - x        |
| `sin5_minus`  | x - 0.1 sin(5x)   |   |               |                   |
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ModelError(ValueError):
    """A model, nonlinearity or initialization is unknown or out of range.

    Defined here, below sweep.models, so that both modules raise the one class;
    sweep.models re-exports it.
    """


class TrigIdentity(nn.Module):
    """`slope * x + amp * trig(freq * x)`, a periodic perturbation of a linear map.

    One class covers every formula of the authors' code: x + sin(10x)/5 is
    slope 1, amp 1/5, freq 10, sin; cos(x) - x is slope -1, amp 1, freq 1, cos.
    """

    def __init__(self, slope: float, amp: float, freq: float, trig: str = "sin"):
        super().__init__()
        if trig not in ("sin", "cos"):
            raise ModelError(f"unknown trig function {trig!r}; use sin or cos")
        self.slope, self.amp, self.freq, self.trig = slope, amp, freq, trig
        self._fn = torch.sin if trig == "sin" else torch.cos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slope * x + self.amp * self._fn(self.freq * x)

    def extra_repr(self) -> str:
        return f"{self.slope}*x + {self.amp}*{self.trig}({self.freq}*x)"


# name -> factory of a fresh module (modules are cheap; a fresh one per layer keeps
# the model's module tree a plain tree)
NONLINEARITIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # PyTorch's default negative slope, 0.01
    "selu": nn.SELU,
    "swish": nn.SiLU,  # x * sigmoid(x)
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "sin1": lambda: TrigIdentity(1.0, 1.0, 1.0),  # x + sin(x)
    "sin1_half": lambda: TrigIdentity(1.0, 0.5, 1.0),  # x + sin(x)/2
    "sin4_half": lambda: TrigIdentity(1.0, 0.5, 4.0),  # x + sin(4x)/2
    "sin10_fifth": lambda: TrigIdentity(1.0, 0.2, 10.0),  # x + sin(10x)/5
    "sin10_tenth": lambda: TrigIdentity(1.0, 0.1, 10.0),  # x + sin(10x)/10
    "cos_minus": lambda: TrigIdentity(-1.0, 1.0, 1.0, "cos"),  # cos(x) - x
    "sin5_minus": lambda: TrigIdentity(1.0, -0.1, 5.0),  # x - 0.1 sin(5x)
}

# the spellings of the authors' code and of PAPER.md -> canonical name
ALIASES: dict[str, str] = {
    "x+sin(x)": "sin1",
    "x+sin(x)/2": "sin1_half",
    "x+sin(4x)/2": "sin4_half",
    "x+sin(10x)/5": "sin10_fifth",
    "x+sin(10x)/10": "sin10_tenth",
    "cos(x)-x": "cos_minus",
    "x-0.1sin(5x)": "sin5_minus",
    "leakyrelu": "leaky_relu",
    "silu": "swish",
}


def canonical_name(name: str) -> str:
    """The canonical name of a nonlinearity, accepting the formula spellings."""
    # spaces do not matter in a formula: "x + sin(10x)/5" == "x+sin(10x)/5"
    key = name.replace(" ", "").lower()
    key = ALIASES.get(key, key)
    if key not in NONLINEARITIES:
        raise ModelError(
            f"unknown nonlinearity {name!r}; choose one of "
            f"{', '.join(NONLINEARITIES)} (or a formula: {', '.join(ALIASES)})"
        )
    return key


def get_nonlinearity(name: str) -> nn.Module:
    """A fresh module computing the named elementwise nonlinearity."""
    return NONLINEARITIES[canonical_name(name)]()
