"""A small sweep through Ray Tune: trials per hour, and what Ray costs per trial.

The cells run in this process one after another with `sweep.trial.run_trial`
and a `LocalSink` (no Ray at all), then through `sweep.launcher.run` on a local
Ray, one CPU per trial: n cells and 2n cells one at a time, and 2n cells two
at a time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from sweep.bench.timing import Row, median
from sweep.catalog import get_sweep

LEGEND = (
    "sweep: ours = sweep.launcher.run on a local Ray, 1 CPU per trial; plain = "
    "the same cells with sweep.trial.run_trial + LocalSink, one after another"
)

# fig3's smoke cells made long enough (~5 s each on one core) that a trial's
# own work, not Ray's bookkeeping, is what a sweep spends its time on
CELL = dict(
    n_train=10,
    image_size=14,
    width=256,
    depth=3,
    target_mse=1e-30,  # below float32 round-off: every cell trains to its cap
    report_every=500,
    checkpoint_every=1000,
    n_test_starts=50,
    n_noise_starts=50,
)


def cells(max_epochs: int, seeds: int) -> list[dict]:
    sweep = get_sweep("fig3", "smoke").with_overrides(
        dict(CELL, max_epochs=max_epochs), {"seed": list(range(seeds))}
    )
    return sweep.trials()


def bench_sweep(max_epochs: int, seeds: int, data_dir: str | None) -> list[Row]:
    """Rows for 1 and 2 concurrent trials; Ray's cost per trial in the notes.

    Ray's per-trial cost is the slope, in the number of trials, of the wall
    time beyond the trials' own (Tune's time_total_s, measured in the worker):
    the same sweep of n and of 2n cells, so the once-per-sweep costs (Ray's
    start and stop, a worker's cold start) cancel out. The in-process times
    are for comparison only: numpy's BLAS there runs on every core, where a
    Ray worker is limited to its one CPU.
    """
    from sweep import launcher
    from sweep.config import TrialConfig
    from sweep.trial import LocalSink, run_trial

    small, big = cells(max_epochs, seeds), cells(max_epochs, 2 * seeds)
    n = len(small)
    data_dir = data_dir or os.environ.get("SWEEP_DATA_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        # no Ray: the cells one after another, one thread, as a worker runs them,
        # after an untimed short cell that reads the data files and warms up
        torch.set_num_threads(1)
        warm = TrialConfig.from_dict(dict(small[0], max_epochs=10))
        run_trial(warm, LocalSink(Path(tmp) / "warm", warm), data_dir)
        own = []
        for i, cell in enumerate(small):
            cfg = TrialConfig.from_dict(cell)
            start = time.perf_counter()
            run_trial(cfg, LocalSink(Path(tmp) / f"local{i}", cfg), data_dir)
            own.append(time.perf_counter() - start)

        # through Tune: n and 2n cells one at a time, 2n cells two at a time
        runs = {}
        for name, trials, concurrent in (
            ("n", small, 1),
            ("2n", big, 1),
            ("2n, 2 at a time", big, 2),
        ):
            outcome = launcher.run(
                launcher.Plan("fig3", "bench", trials, {}),
                tmp,
                f"bench{len(runs)}",
                cpus_per_trial=1,
                max_concurrent=concurrent,
                num_cpus=os.cpu_count(),
                data_dir=data_dir,
                show_progress=False,
            )
            if outcome.n_finished != len(trials):
                raise RuntimeError(f"sweep bench: {outcome.errors or 'unfinished'}")
            runs[name] = (outcome.wall_s, _trial_times(Path(outcome.path)))

    # Ray's cost per trial: what n more trials added to the wall time beyond
    # their own time as Tune measured it in the worker (time_total_s)
    trial_s = sum(own) / n
    beyond = {name: wall - sum(times) for name, (wall, times) in runs.items()}
    overhead = (beyond["2n"] - beyond["n"]) / n
    fixed = beyond["n"] - n * overhead
    inside = sum(runs["2n"][1]) / (2 * n)
    rows = []
    for name in ("2n", "2n, 2 at a time"):
        wall, times = runs[name]
        concurrent = 2 if "2 at a time" in name else 1
        notes = {
            "trials/hour": f"in-process {3600 / trial_s:.0f}; Ray "
            f"{3600 * 2 * n / wall:.0f} ({2 * n} trials, {wall:.0f} s wall)",
            "per trial": f"own time in-process {trial_s:.2f} s, inside Ray "
            f"{sum(times) / len(times):.2f} s",
        }
        if concurrent == 1:
            notes["ray cost"] = (
                f"{overhead:.2f} s per trial = {overhead / inside:.1%} of a trial "
                f"(aim < 5%), plus {fixed:.1f} s per sweep (start, stop, workers)"
            )
        rows.append(
            Row(
                "sweep",
                f"{2 * n} fig3 smoke cells, {max_epochs} epochs, "
                f"~{median(own):.0f} s each",
                f"Ray Tune, {concurrent} concurrent x 1 CPU",
                wall / (2 * n),
                "in-process, one by one",
                trial_s,
                trial_s / (wall / (2 * n)),
                unit="trial",
                aim="overhead < 5%",
                notes=notes,
                values=dict(
                    concurrent=concurrent,
                    trial_s=trial_s,
                    trial_in_ray_s=sum(times) / len(times),
                    overhead_s=overhead,
                    overhead_share=overhead / inside,
                    fixed_s=fixed,
                    wall_s=wall,
                    trials_per_hour=3600 * 2 * n / wall,
                ),
            )
        )
    return rows


def _trial_times(exp: Path) -> list[float]:
    """Each trial's own time as Tune measured it in the worker (time_total_s)."""
    times = []
    for result in sorted(exp.glob("*/result.json")):
        last = [ln for ln in result.read_text().splitlines() if ln.strip()][-1]
        times.append(float(json.loads(last)["time_total_s"]))
    return times


PACK_LEGEND = (
    "packed sweep: ours = sweep.launcher.run with pack=K (K cells of one shape "
    "train as one batched model per trial); plain = the same sweep, one trial a cell"
)


def bench_packed_sweep(
    n_cells: int, pack: int, max_epochs: int, data_dir: str | None
) -> list[Row]:
    """The same sweep on a local Ray with and without packing, equal CPUs.

    n_cells seeds of fig3's smoke cell (MNIST at 7x7, FC 2 x 32, d = 49: where
    packing pays on CPU), each trained to its cap, two trials at a time on one
    CPU each; per cell: the sweep's wall time over its cells.
    """
    from sweep import launcher

    cells = (
        get_sweep("fig3", "smoke")
        .with_overrides(
            dict(nonlinearity="selu", target_mse=1e-30, max_epochs=max_epochs),
            {"seed": list(range(n_cells))},
        )
        .trials()
    )
    data_dir = data_dir or os.environ.get("SWEEP_DATA_DIR")
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, pack):
            outcome = launcher.run(
                launcher.Plan("fig3", "bench", cells, {}),
                tmp,
                f"pack{k}",
                cpus_per_trial=1,
                max_concurrent=2,
                num_cpus=2,
                data_dir=data_dir,
                pack=k,
                show_progress=False,
            )
            if outcome.n_finished != len(cells):
                raise RuntimeError(f"packed bench: {outcome.errors or 'unfinished'}")
            walls[k] = outcome.wall_s
    per = {k: wall / len(cells) for k, wall in walls.items()}
    return [
        Row(
            "packsweep",
            f"{len(cells)} fig3 smoke cells (d = 49), {max_epochs} epochs, "
            "2 trials at a time x 1 CPU",
            f"packs of {pack}",
            per[pack],
            "one trial a cell",
            per[1],
            per[1] / per[pack],
            unit="cell",
            notes={
                "wall": f"packed {walls[pack]:.0f} s, one a cell {walls[1]:.0f} s "
                "(Ray's start included in both)"
            },
            values=dict(
                pack=pack, n_cells=len(cells), wall_s=walls[pack], plain_wall_s=walls[1]
            ),
        )
    ]
