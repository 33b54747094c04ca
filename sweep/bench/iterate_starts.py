"""Iterating many starts: batched with drop-out against one start at a time.

Ours is `sweep.dynamics.iterate`: all starts in batches of 4096 rows, a host
sync every few steps, settled starts dropping out. The plain version iterates
one start at a time in a Python loop with the same stopping rule, reading the
step size every step. The plain loop is timed on an evenly spaced subset of the
starts and extrapolated to all of them (starts differ in how long they take,
so the subset is spread over the whole set).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sweep.bench.timing import Row, interleave, median
from sweep.data import images
from sweep.dynamics import iterate
from sweep.models import build_model
from sweep.training import Trainer, make_optimizer

STEP_TOL = 1e-6  # TrialConfig's default: an RMS step of 1e-6 per pixel
DIVERGE_NORM = 1e6  # dynamics.Tolerances' default
LR = 1e-4
LEGEND = (
    "iterate: ours = sweep.dynamics.iterate (batches of 4096, drop-out of "
    "settled starts); plain = one start at a time in a Python loop, same rule, "
    "timed on an evenly spaced subset and scaled to all starts"
)


def trained_net(
    n_train: int, epochs: int, width: int, depth: int, image_size: int | None
) -> tuple[nn.Module, float]:
    """An FC net trained `epochs` full-batch Adam epochs on real MNIST digits.

    A briefly trained net, not an interpolating one: its starts settle in about
    a hundred steps (measured), so 10,000 of them fit a benchmark's budget.
    """
    x = images("mnist", "train", n_train, image_size=image_size)
    shape, x = tuple(x.shape[1:]), x.reshape(n_train, -1)
    torch.manual_seed(0)
    model = build_model("fc", shape, width=width, depth=depth, nonlinearity="selu")
    optimizer = make_optimizer("adam", model.parameters(), LR)
    trainer = Trainer(model, optimizer, x, x, max_epochs=max(epochs, 1))
    trainer.run(epochs)
    return model.eval(), trainer.mse


def one_at_a_time(f: nn.Module, start: torch.Tensor, max_steps: int) -> tuple:
    """The plain loop: iterate one start (d,), checking every step on the host."""
    d = start.numel()
    settle, blowup = STEP_TOL * math.sqrt(d), DIVERGE_NORM * math.sqrt(d)
    x = start[None]  # (1, d)
    with torch.no_grad():
        for age in range(1, max_steps + 1):  # noqa: B007 (returned: steps taken)
            y = f(x)
            moved, size = (y - x).norm().item(), y.norm().item()
            x = y
            if not math.isfinite(size) or size > blowup or moved <= settle:
                break
    return x[0], age


def bench_iteration(
    n_starts: int,
    max_steps: int,
    n_plain: int,
    rounds: int,
    n_train: int,
    train_epochs: int,
    width: int = 256,
    depth: int = 11,
    image_size: int | None = None,
) -> list[Row]:
    # a briefly trained net and real test digits to start from
    torch.set_num_threads(1)
    f, mse = trained_net(n_train, train_epochs, width, depth, image_size)
    starts = images("mnist", "test", n_starts, image_size=image_size)
    starts = starts.reshape(n_starts, -1)  # (n_starts, d)
    subset = np.linspace(0, n_starts - 1, n_plain).round().astype(int)
    result: dict = {}

    def batched() -> None:
        result["batched"] = iterate(f, starts, max_steps, STEP_TOL)

    def plain() -> None:
        result["plain"] = [one_at_a_time(f, starts[i], max_steps) for i in subset]

    # no warm-up round: one batched run is tens of seconds, and first calls
    # cost a fraction of a percent of that
    times = interleave({"batched": batched, "plain": plain}, rounds, warm_up=False)

    # the two must agree where both ran: same step counts, same endpoints
    ends, steps, status = result["batched"]
    plain_ends = torch.stack([e for e, _ in result["plain"]])
    plain_steps = np.array([s for _, s in result["plain"]])
    same_steps = int((plain_steps == steps[subset]).sum())
    gap = (plain_ends - ends[subset]).abs().max().item()
    plain_s = median(times["plain"]) * n_starts / n_plain
    ours_s = median(times["batched"])
    settled = float(np.mean(status == "settled"))
    return [
        Row(
            "iterate",
            f"{n_starts} starts x <= {max_steps} steps, d={starts.shape[1]}, "
            f"fc {depth}x{width}",
            "batched iterate, 1 thread",
            ours_s,
            f"one at a time ({n_plain} timed, x{n_starts / n_plain:.0f}), 1 thread",
            plain_s,
            plain_s / ours_s,
            unit="run",
            aim="50x",
            notes={
                "net": f"trained {train_epochs} epochs on {n_train} MNIST digits "
                f"(MSE {mse:.1e}); starts: MNIST test digits",
                "steps": f"mean {steps.mean():.0f} steps per start, "
                f"{settled:.0%} settled",
                "agree": f"{same_steps}/{n_plain} same step count, max |end "
                f"difference| {gap:.1e}",
                "per start-step": f"batched {ours_s / steps.sum() * 1e6:.1f} us, "
                f"plain {plain_s / steps.sum() * 1e6:.1f} us",
            },
            values=dict(
                n_starts=n_starts,
                mean_steps=float(steps.mean()),
                settled_share=settled,
                n_plain=n_plain,
                same_steps=same_steps,
                max_end_difference=gap,
            ),
        )
    ]
