"""Packed trials: K nets trained as one batched model against K trainers in turn.

Ours is `sweep.packing.PackedTrainer` on K copies of one cell (seeds 0..K-1,
one learning rate unless the case says otherwise). The plain version is K
`sweep.training.Trainer`s run one after another, as K trials on one core
would. Both train on the same real digits; the unit is one trial's step.
A second comparison times the pack's forward + backward as our batched
matmuls against `torch.func.vmap` over `functional_call`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.func import functional_call, stack_module_state, vmap

from sweep.bench.timing import Row, interleave, median, speedup
from sweep.data import images
from sweep.models import build_model
from sweep.packing import PackedFC, PackedTrainer
from sweep.training import Trainer, make_optimizer

LR = 1e-4
UNREACHABLE_MSE = 1e-30  # nobody converges, so every member trains every step
LEGEND = (
    "pack: ours = sweep.packing.PackedTrainer, K nets as one batched model; "
    "plain = K sweep.training.Trainers run one after another; "
    "pack-fwd-bwd: the pack's forward + backward, our baddbmm layers against "
    "torch.func.vmap over functional_call"
)


@dataclass(frozen=True)
class PackCase:
    name: str  # which profile the net is from
    n: int
    width: int
    depth: int
    image_size: int | None

    def data(self) -> tuple[torch.Tensor, tuple[int, ...]]:
        x = images("mnist", "train", self.n, image_size=self.image_size)
        return x.reshape(self.n, -1), tuple(x.shape[1:])

    def models(self, k: int, shape: tuple[int, ...]) -> list[torch.nn.Module]:
        out = []
        for seed in range(k):
            torch.manual_seed(seed)
            out.append(
                build_model(
                    "fc", shape, width=self.width, depth=self.depth, nonlinearity="selu"
                )
            )
        return out

    def label(self, d: int) -> str:
        return f"{self.name}: n={self.n} d={d} fc {self.depth}x{self.width}"


def bench_packing(
    cases: list[PackCase],
    ks: list[int],
    rounds: int,
    steps: int,
    lr_groups: int = 1,
    device: str = "cpu",
) -> list[Row]:
    """Rows for each case and K; on `device` (e.g. cuda), both versions."""
    torch.set_num_threads(1)
    dev = torch.device(device)
    rows = []
    for case in cases:
        x, shape = case.data()
        x = x.to(dev)
        for k in ks:
            rows.append(_packed_vs_separate(case, x, shape, k, rounds, steps, 1, dev))
        if lr_groups > 1:
            k = max(ks)
            rows.append(
                _packed_vs_separate(case, x, shape, k, rounds, steps, lr_groups, dev)
            )
    rows.append(_bmm_vs_vmap(cases[0], min(ks[-1], 8), rounds, steps, dev))
    return rows


def _synced(fn, device: torch.device):
    """fn, then wait for the device: a GPU's queued kernels count in its time."""
    if device.type != "cuda":
        return fn

    def call() -> None:
        fn()
        torch.cuda.synchronize(device)

    return call


def _packed_vs_separate(case, x, shape, k, rounds, steps, n_lrs, device) -> Row:
    # K copies of one cell, differing in seed (and, if asked, learning rate)
    models = [model.to(device) for model in case.models(k, shape)]
    lrs = [LR * (1 + i % n_lrs) for i in range(k)]
    trainers = []
    for model, lr in zip(copy.deepcopy(models), lrs, strict=True):
        optimizer = make_optimizer("adam", model.parameters(), lr)
        trainers.append(
            Trainer(
                model, optimizer, x, x, target_mse=UNREACHABLE_MSE, max_epochs=10**12
            )
        )
    packed = PackedFC.from_models(
        models, shape, width=case.width, depth=case.depth, nonlinearity="selu"
    )
    xs = x.expand(k, -1, -1).contiguous()  # (K, n, d)
    pack = PackedTrainer(
        packed, "adam", lrs, xs, xs, target_mse=UNREACHABLE_MSE, max_epochs=10**12
    )

    def separate() -> None:
        for trainer in trainers:
            trainer.run(steps)

    versions = {"packed": lambda: pack.run(steps), "separate": separate}
    times = interleave({n: _synced(f, device) for n, f in versions.items()}, rounds)
    per = k * steps  # trial-steps per call
    ours, plain = median(times["packed"]) / per, median(times["separate"]) / per
    lr_note = "one lr" if n_lrs == 1 else f"{n_lrs} lrs (one optimizer each)"
    return Row(
        "pack",
        f"{case.label(x.shape[1])}, K={k}, {lr_note}",
        f"PackedTrainer, {_where(device)}",
        ours,
        f"{k} Trainers in turn, {_where(device)}",
        plain,
        speedup(times["separate"], times["packed"]),
        unit="trial-step",
        notes={"trial-steps/s": f"packed {1 / ours:.0f}, separate {1 / plain:.0f}"},
        values=dict(k=k, n_lrs=n_lrs, packed_per_s=1 / ours, separate_per_s=1 / plain),
    )


def _where(device: torch.device) -> str:
    return "1 thread" if device.type == "cpu" else str(device)


def _bmm_vs_vmap(case: PackCase, k: int, rounds: int, steps: int, device) -> Row:
    """Forward + backward of K nets: our baddbmm layers against vmap."""
    x, shape = case.data()
    x = x.to(device)
    models = [model.to(device) for model in case.models(k, shape)]
    xs = x.expand(k, -1, -1).contiguous()  # (K, n, d)
    packed = PackedFC.from_models(
        models, shape, width=case.width, depth=case.depth, nonlinearity="selu"
    )
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, b, inputs):
        return functional_call(base, (p, b), (inputs,))

    def ours() -> None:
        for _ in range(steps):
            loss = (packed(xs) - xs).pow(2).mean(dim=(1, 2)).sum()
            torch.autograd.grad(loss, list(packed.params))

    def vmapped() -> None:
        for _ in range(steps):
            out = vmap(one)(params, buffers, xs)
            loss = (out - xs).pow(2).mean(dim=(1, 2)).sum()
            torch.autograd.grad(loss, list(params.values()))

    versions = {"bmm": ours, "vmap": vmapped}
    times = interleave({n: _synced(f, device) for n, f in versions.items()}, rounds)
    return Row(
        "pack-fwd-bwd",
        f"{case.label(x.shape[1])}, K={k}",
        "baddbmm layers (PackedFC)",
        median(times["bmm"]) / steps,
        "vmap(functional_call)",
        median(times["vmap"]) / steps,
        speedup(times["vmap"], times["bmm"]),
        unit="pack-step",
    )
