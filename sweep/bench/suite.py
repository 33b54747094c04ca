"""The benchmark suite at three sizes: smoke (seconds), quick, full."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sweep.bench import iterate_starts, packed, ray_sweep, spectral, train_steps
from sweep.bench.iterate_starts import bench_iteration
from sweep.bench.packed import PackCase, bench_packing
from sweep.bench.spectral import bench_spectra
from sweep.bench.timing import Row
from sweep.bench.train_steps import Case, bench_training

BENCHES = ("train", "iterate", "spectra", "pack", "sweep", "packsweep")
MODES = ("smoke", "quick", "full")
LEGENDS = {
    "train": train_steps.LEGEND,
    "iterate": iterate_starts.LEGEND,
    "spectra": spectral.LEGEND,
    "pack": packed.LEGEND,
    "sweep": ray_sweep.LEGEND,
    "packsweep": ray_sweep.PACK_LEGEND,
}

# the paper's nets (PAPER.md): FC 11 x 256 SELU, Adam lr 1e-4, full batch
PAPER_CASES = [Case("cifar10", 10), Case("mnist", 100)]
TINY = dict(width=32, depth=2, image_size=7)  # MNIST at 7x7: d = 49
QUICK_NET = PackCase("quick profile", 10, 256, 5, 14)  # catalog's quick fc net
PAPER_NET = PackCase("paper fig3", 10, 256, 11, None)


def plan(
    mode: str, default_threads: int, device: str = "cpu"
) -> dict[str, Callable[[], list[Row]]]:
    """Each benchmark as a call, sized for `mode`."""
    smoke, full = mode == "smoke", mode == "full"
    tiny_case = Case("mnist", 10, **TINY)
    return {
        "train": lambda: bench_training(
            [tiny_case] if smoke else PAPER_CASES,
            rounds=2 if smoke else 9 if full else 5,
            steps=3 if smoke else 20 if full else 10,
            default_threads=default_threads,
            rate_sizes=(256, 4) if smoke else (2048, 256),
            compile_too=full,
        ),
        "iterate": lambda: bench_iteration(
            n_starts=64 if smoke else 10_000 if full else 2_000,
            max_steps=50 if smoke else 1_000,
            n_plain=4 if smoke else 100 if full else 20,
            rounds=2 if full else 1,
            n_train=10 if smoke else 100,
            train_epochs=5 if smoke else 100,
            **(TINY if smoke else {}),
        ),
        "spectra": lambda: bench_spectra(
            "mnist" if not full else "cifar10",
            n_train=4 if smoke else 10,
            train_epochs=5 if smoke else 100,
            rounds=1 if smoke else 2,
            **(TINY if smoke else {}),
        ),
        "pack": lambda: bench_packing(
            [PackCase("smoke", 4, **TINY)] if smoke else [QUICK_NET, PAPER_NET],
            ks=[2] if smoke else [8, 32],
            rounds=2 if smoke else 5 if full else 3,
            steps=3 if smoke else 10,
            lr_groups=8 if full else 1,
            device=device,
        ),
        "sweep": lambda: _sweep(full),
        "packsweep": lambda: ray_sweep.bench_packed_sweep(
            n_cells=4 if smoke else 16,
            pack=2 if smoke else 8,
            max_epochs=100 if smoke else 3_000,
            data_dir=None,
        ),
    }


def _sweep(full: bool) -> list[Row]:
    return ray_sweep.bench_sweep(
        max_epochs=3_500 if full else 1_000, seeds=2, data_dir=None
    )


def run(mode: str, only: list[str], device: str = "cpu") -> list[Row]:
    """Run the chosen benchmarks; the thread count is restored after each.

    `device` is where the packing benchmark runs (the others run on CPU).
    """
    default_threads = torch.get_num_threads()
    calls = plan(mode, default_threads, device)
    rows: list[Row] = []
    for name in only:
        rows += calls[name]()
        torch.set_num_threads(default_threads)
    return rows
