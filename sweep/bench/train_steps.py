"""Training steps/s: our `Trainer` against the plainest full-batch loop.

The plain loop is what a first version looks like: zero_grad, forward, MSE,
backward, step, `loss.item()` every step, PyTorch's default threads and its
default (for-loop) Adam on CPU. Ours is `sweep.training.Trainer` as a trial
runs it: fused Adam, the loss read every `check_every` steps. The *limit* is
what the step's arithmetic and the optimizer's memory traffic cost at this
machine's measured rates; a step cannot be much faster than that.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweep.bench.timing import Row, interleave, median, speedup, threads
from sweep.data import images
from sweep.models import build_model
from sweep.training import Trainer, make_optimizer

# Adam touches 4 arrays per parameter (value, gradient, two moments), each read
# and written once per step, 4 bytes a float: the brief's count of its traffic
ADAM_ARRAYS, READ_WRITE, FLOAT_BYTES = 4, 2, 4
# backward of a linear layer is two matmuls of the forward's size
BACKWARD_FACTOR = 2
LR = 1e-4  # the paper's Adam rate
UNREACHABLE_MSE = 1e-30  # the target is never met, so every step is timed
CHECK_EVERY = 10  # TrialConfig's default
LEGEND = (
    "train: ours = sweep.training.Trainer (fused Adam, loss read every "
    f"{CHECK_EVERY} steps); plain = zero_grad, forward, MSE, backward, for-loop "
    "Adam step, loss.item() every step, default threads; limit = FLOPs / matmul "
    "rate + Adam bytes / copy bandwidth, both measured here"
)


@dataclass(frozen=True)
class Case:
    dataset: str
    n: int
    width: int = 256
    depth: int = 11
    image_size: int | None = None

    def data(self) -> torch.Tensor:
        x = images(self.dataset, "train", self.n, image_size=self.image_size)
        return x.reshape(self.n, -1)  # (n, d)

    def model(self, shape: tuple[int, ...]) -> nn.Module:
        torch.manual_seed(0)
        return build_model(
            "fc", shape, width=self.width, depth=self.depth, nonlinearity="selu"
        )


def step_flops(model: nn.Module, n: int) -> float:
    """Forward 2 n d_in d_out per linear layer, backward twice that."""
    forward = sum(
        2 * n * m.in_features * m.out_features
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )
    return forward * (1 + BACKWARD_FACTOR)


def adam_bytes(model: nn.Module) -> float:
    n_params = sum(p.numel() for p in model.parameters())
    return ADAM_ARRAYS * READ_WRITE * FLOAT_BYTES * n_params


def machine_rates(threads: int, side: int, copy_mb: int) -> tuple[float, float]:
    """(FLOP/s of a large float32 matmul, bytes/s of a large tensor copy).

    The best round, not the median: a rate is what the machine can do, and
    other processes only ever slow it down.
    """
    torch.set_num_threads(threads)
    a, b = torch.randn(side, side), torch.randn(side, side)
    src = torch.ones(copy_mb * 2**20 // FLOAT_BYTES)
    dst = torch.empty_like(src)
    times = interleave({"mm": lambda: a @ b, "copy": lambda: dst.copy_(src)}, 7, 3)
    flops = 2 * side**3 / min(times["mm"])
    moved = 2 * src.numel() * FLOAT_BYTES  # read src, write dst
    return flops, moved / min(times["copy"])


def plain_loop(model: nn.Module, x: torch.Tensor, threads: int, steps: int):
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # CPU default: for-loop

    def run() -> None:
        torch.set_num_threads(threads)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), x)
            loss.backward()
            optimizer.step()
            loss.item()

    return run


def our_loop(model: nn.Module, x: torch.Tensor, threads: int, steps: int):
    optimizer = make_optimizer("adam", model.parameters(), LR)
    trainer = Trainer(
        model,
        optimizer,
        x,
        x,
        target_mse=UNREACHABLE_MSE,
        max_epochs=10**12,
        check_every=CHECK_EVERY,
    )

    def run() -> None:
        torch.set_num_threads(threads)
        trainer.run(steps)

    return run


def bench_training(
    cases: list[Case],
    rounds: int,
    steps: int,
    default_threads: int,
    rate_sizes: tuple[int, int],
    compile_too: bool = False,
) -> list[Row]:
    """One row per case and setting of ours; the limit in each row's notes."""
    rows = []
    thread_counts = sorted({1, default_threads})
    rates = {t: machine_rates(t, *rate_sizes) for t in thread_counts}
    for case in cases:
        # every version starts from the same weights, on the same real images
        x = case.data()
        shape = images(case.dataset, "train", 1, image_size=case.image_size).shape
        shape = tuple(shape[1:])
        plain = plain_loop(case.model(shape), x, default_threads, steps)
        ours = {
            (f"Trainer, {threads(t)}", t): our_loop(case.model(shape), x, t, steps)
            for t in thread_counts
        }
        compile_s = math.nan
        if compile_too:
            # measure whether torch.compile pays: its first steps compile
            start = time.perf_counter()
            run = our_loop(torch.compile(case.model(shape)), x, 1, steps)
            run()
            compile_s = time.perf_counter() - start
            ours[("Trainer + torch.compile, 1 thread", 1)] = run
        times = interleave({"plain": plain, **ours}, rounds)

        # the limit: arithmetic at matmul speed plus Adam's traffic at copy speed
        ref = case.model(shape)
        flops, traffic = step_flops(ref, case.n), adam_bytes(ref)
        label = f"{case.dataset} n={case.n} d={x.shape[1]} fc {case.depth}x{case.width}"
        for setting, n_threads in ours:
            per_step = median(times[setting, n_threads]) / steps
            rate, bandwidth = rates[n_threads]
            limit = flops / rate + traffic / bandwidth
            notes = {
                "limit": f"{limit * 1e3:.3g} ms/step = {flops / 1e6:.3g} MFLOP / "
                f"{rate / 1e9:.0f} GFLOP/s + {traffic / 1e6:.3g} MB / "
                f"{bandwidth / 1e9:.1f} GB/s; ours = {per_step / limit:.2f}x limit"
            }
            values = dict(
                limit_s=limit,
                ours_over_limit=per_step / limit,
                step_flops=flops,
                adam_bytes=traffic,
                matmul_flops_per_s=rate,
                copy_bytes_per_s=bandwidth,
            )
            if "compile" in setting:
                notes["compile"] = f"first {steps} steps took {compile_s:.1f} s"
                values["compile_s"] = compile_s
            rows.append(
                Row(
                    "train",
                    label,
                    setting,
                    per_step,
                    f"plain loop, {threads(default_threads)}",
                    median(times["plain"]) / steps,
                    speedup(times["plain"], times[setting, n_threads]),
                    aim="2x (d=3072); 1.5x limit",
                    notes=notes,
                    values=values,
                )
            )
    return rows
