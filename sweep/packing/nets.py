"""K fully connected nets of one shape, stacked and run as batched matmuls."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sweep.models import build_model
from sweep.nonlinearities import get_nonlinearity


class PackingError(ValueError):
    """Trials or models that cannot train together as one packed model."""


class PackedFC(nn.Module):
    """K fully connected nets of one shape as batched matmuls: (K, n, d) -> (K, n, d).

    `params` holds [W_0, b_0, W_1, b_1, ...] stacked over the K nets, W_i of
    shape (K, d_out, d_in) and b_i (K, d_out), in the order of the parameters
    of `build_model("fc", ...)`, so row k unpacks into that model exactly.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        shape: tuple[int, int, int],
        *,
        width: int,
        depth: int,
        nonlinearity: str,
    ):
        super().__init__()
        self.shape, self.width, self.depth = tuple(shape), width, depth
        self.nonlinearity = nonlinearity
        self.params = nn.ParameterList(nn.Parameter(p) for p in params)
        self.act = get_nonlinearity(nonlinearity)

    @classmethod
    def from_models(
        cls,
        models: Sequence[nn.Module],
        shape: tuple[int, int, int],
        *,
        width: int,
        depth: int,
        nonlinearity: str,
    ) -> PackedFC:
        """Stack fc models built by `build_model("fc", shape, ...)`."""
        with torch.device("meta"):
            like = build_model(
                "fc", shape, width=width, depth=depth, nonlinearity=nonlinearity
            )
        layout = [(k, v.shape) for k, v in like.state_dict().items()]
        for i, model in enumerate(models):
            if [(k, v.shape) for k, v in model.state_dict().items()] != layout:
                raise PackingError(
                    f"model {i} is not build_model('fc', {tuple(shape)}, width="
                    f"{width}, depth={depth}); pack only nets of that one shape"
                )
        stacked = [
            torch.stack([p.detach() for p in group])
            for group in zip(*(m.parameters() for m in models), strict=True)
        ]
        return cls(stacked, shape, width=width, depth=depth, nonlinearity=nonlinearity)

    def __len__(self) -> int:
        return len(self.params[0])

    def forward(self, x: Tensor) -> Tensor:
        # x (K, n, d): each layer is b + x W^T per net, the last one linear
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            w, b = self.params[2 * i], self.params[2 * i + 1]
            x = _BatchedLinear.apply(x, w, b)  # (K, n, out)
            if i < n_layers - 1:
                x = self.act(x)
        return x

    def unpack(self, k: int) -> nn.Sequential:
        """Net k as the plain module `build_model("fc", ...)` makes, weights copied."""
        model = build_model(
            "fc",
            self.shape,
            width=self.width,
            depth=self.depth,
            nonlinearity=self.nonlinearity,
        )
        with torch.no_grad():
            for mine, stacked in zip(model.parameters(), self.params, strict=True):
                mine.copy_(stacked[k])
        return model.to(self.params[0].device)

    def select(self, rows: Sequence[int]) -> PackedFC:
        """A new pack of the nets at `rows`, in that order (copies the weights)."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        params = [p.detach()[index.to(p.device)] for p in self.params]
        return PackedFC(
            params,
            self.shape,
            width=self.width,
            depth=self.depth,
            nonlinearity=self.nonlinearity,
        )


class _BatchedLinear(torch.autograd.Function):
    """y = b + x W^T per net, for x (K, n, in), W (K, out, in), b (K, out).

    Autograd's own backward of `baddbmm(b, x, W^T)` hands W a transposed,
    non-contiguous gradient, which PyTorch's fused CPU optimizers misread (they
    walk the gradient in the parameter's memory order): this backward writes
    dL/dW = g^T x contiguous, as `nn.Linear`'s backward does.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, w = ctx.saved_tensors
        dx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None  # (K, n, in)
        return dx, torch.bmm(g.transpose(1, 2), x), g.sum(dim=1)


def packs_exactly(
    shape: tuple[int, int, int],
    n: int,
    *,
    width: int,
    depth: int,
    nonlinearity: str,
    sizes: Sequence[int] = (1, 2),
) -> bool:
    """Whether packs of these sizes compute, on this machine's CPU at the
    current thread count, each net's outputs and MSE gradients to the last bit.

    Elementwise kernels cut a tensor into vector chunks and a scalar tail, and
    matmul kernels block their rows, so a net's numbers in a stacked tensor
    can round differently than alone: whether they do depends on the shapes
    alone (measured on torch 2.13 CPU: widths that are multiples of 16 are
    exact; 8, 24, 50, 100, 120, 200 are not, by ~1e-7). One forward and
    backward on random weights and data tells.
    """
    d = math.prod(shape)
    generator = torch.Generator().manual_seed(0)
    for k in sorted(set(sizes)):
        torch.manual_seed(k)
        models = [
            build_model(
                "fc", shape, width=width, depth=depth, nonlinearity=nonlinearity
            )
            for _ in range(k)
        ]
        x = torch.rand(k, n, d, generator=generator)  # (K, n, d)
        packed = PackedFC.from_models(
            models, shape, width=width, depth=depth, nonlinearity=nonlinearity
        )
        out = packed(x)
        grads = torch.autograd.grad(
            (out - x).pow(2).mean(dim=(1, 2)).sum(), list(packed.params)
        )
        for j, model in enumerate(models):
            alone = model(x[j])
            alone_grads = torch.autograd.grad(
                (alone - x[j]).pow(2).mean(), list(model.parameters())
            )
            if not torch.equal(out[j].detach(), alone.detach()) or not all(
                torch.equal(g[j], a) for g, a in zip(grads, alone_grads, strict=True)
            ):
                return False
    return True
