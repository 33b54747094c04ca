"""Build and run the Ray Tune experiment behind a sweep.

This module, `sweep.connect`, `sweep.trial`, `sweep.packed_trial` and
`sweep.progress` are the only places that import Ray. Decisions, each
measured on Ray Tune 2.60 (see the notes on Ray Tune 2.60 this project measured):
- FIFO scheduling, no early stopping: every cell trains to the MSE target or
  its cap, because the converged network is what we measure.
- The grid is expanded and validated here, then handed to Tune as one grid
  axis `cell` of full config dicts, so a bad cell fails before Ray starts.
  With `--pack K` the axis is `pack` instead: cells of one shape in packs of
  up to K, each pack one trial training them as one batched model.
- `reuse_actors=True` (14x less per-trial overhead), short trial dir names,
  `FailureConfig(max_failures=2)` so a killed worker retries from its last
  checkpoint, never `fail_fast` (it strands in-flight trials).
- Local Ray binds loopback only and runs without the dashboard
  (`sweep.connect`). The sweep directory's `sweep.json` and the storage
  checks are in `sweep.manifest`.
- Everything a user can get wrong (storage, an existing sweep of another
  search space, data files, a cluster address with nothing behind it) is
  checked before Ray starts and before anything is written.
- SIGTERM is handled like Ctrl-C: Tune saves its state and stops, so
  `sweep resume` continues; a trial that finished while the driver was being
  killed is not run again (see `sweep.trial.stored_summary`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import metrics as m

# connecting to Ray (local on loopback, or a cluster) is sweep.connect, the
# manifest and storage sweep.manifest (no Ray there); the names the CLI,
# benches and tests import from here are re-exported
from sweep.connect import CONNECT_TIMEOUT_S as CONNECT_TIMEOUT_S
from sweep.connect import LOOPBACK_ENV as LOOPBACK_ENV
from sweep.connect import QUIET_ENV as QUIET_ENV
from sweep.connect import check_address as check_address
from sweep.connect import check_resources as check_resources
from sweep.connect import connect as connect
from sweep.driver import check_free, hold
from sweep.manifest import MANIFEST as MANIFEST
from sweep.manifest import MANIFEST_SCHEMA as MANIFEST_SCHEMA
from sweep.manifest import LaunchError as LaunchError
from sweep.manifest import Plan as Plan
from sweep.manifest import check_storage as check_storage
from sweep.manifest import decide as decide
from sweep.manifest import experiment_path as experiment_path
from sweep.manifest import has_manifest as has_manifest
from sweep.manifest import holds_files as holds_files
from sweep.manifest import is_uri as is_uri
from sweep.manifest import packs_of as packs_of
from sweep.manifest import provenance as provenance
from sweep.manifest import read_manifest as read_manifest
from sweep.manifest import write_manifest as write_manifest

log = logging.getLogger("sweep")


def check_cells(cells: list[dict], gpus_per_trial: float, data_dir: str | None) -> None:
    """Refuse cells that would fail inside every trial (and be retried twice)."""
    from sweep.config import TrialConfig
    from sweep.trial import load_inputs

    configs = [TrialConfig.from_dict(c) for c in cells]
    if gpus_per_trial == 0 and any(c.device == "cuda" for c in configs):
        raise LaunchError(
            "cells ask for device=cuda but --gpus-per-trial is 0; pass "
            "--gpus-per-trial 1 (or a fraction) or --set device=cpu"
        )

    # load each distinct input once, as the trial will: missing, truncated or
    # altered files and too few images fail here (a DataError), in seconds
    inputs = {
        (
            c.dataset,
            c.n_train,
            c.stride,
            c.subset_seed,
            c.image_size,
            c.grey,
            c.n_test_starts,
        ): c
        for c in configs
    }
    for cfg in inputs.values():
        load_inputs(cfg, data_dir)


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[list[int]]:
    """Treat SIGTERM (`kill`, a batch scheduler) like Ctrl-C, which Tune handles
    by saving its state and stopping; yields the signals received."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.raise_signal(signal.SIGINT)

    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Outcome:
    path: str
    n_trials: int
    n_finished: int
    n_errors: int
    errors: list[str]
    wall_s: float
    interrupted: int | None = None  # the signal that stopped the sweep early

    @property
    def n_unfinished(self) -> int:
        return self.n_trials - self.n_finished - self.n_errors


def run(
    plan: Plan | None,
    storage: str,
    name: str,
    *,
    resume: bool = False,
    address: str | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    max_concurrent: int = 0,
    num_cpus: int | None = None,
    data_dir: str | None = None,
    max_failures: int = 2,
    pack: int = 1,
    show_progress: bool = True,
    announce: Callable[[str, int, bool], None] | None = None,
) -> Outcome:
    """Run (or, with `resume`, continue) the sweep at storage/name.

    Every check that needs no Ray comes first and nothing is written before
    Ray is up, so a mistake leaves the storage as it was. `announce(path,
    n_trials, resuming)` is called once the checks pass. With `pack` > 1,
    each Tune trial trains up to `pack` cells of one shape as one batched
    model (`sweep.packed_trial`); a resumed sweep keeps how it was packed.
    """
    import ray
    from ray import tune

    from sweep.progress import ProgressCallback

    # checks: storage, what is there already, the cells, the cluster address
    storage = check_storage(storage)
    exp = experiment_path(storage, name)
    restorable = tune.Tuner.can_restore(exp)
    # tuner.pkl without Tune's trial state (the driver was killed within its
    # first second, or the file was lost): restoring would start a bogus
    # experiment inside this sweep
    lost = restorable and not is_uri(exp)
    lost = lost and not any(Path(exp).glob("experiment_state-*"))
    if lost and not any_trial_started(exp):
        restorable = False  # no trial started: nothing is lost by starting afresh
    elif lost:
        raise LaunchError(
            f"{exp} has lost Ray Tune's experiment state (experiment_state-*.json); "
            "its finished trials are still readable with `sweep summary`, but it "
            "cannot be resumed: run it again under a new --name"
        )
    check_free(exp)  # one driver a sweep
    resume, cells = decide(plan, exp, resume, restorable, pack)
    if resume:  # packed as it was started
        packs = packs_of(read_manifest(exp)) if has_manifest(exp) else None
    else:
        packs = plan_packs(cells, pack, cpus_per_trial)
    check_cells(cells, gpus_per_trial, data_dir)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "local"):
        check_address(address)
    if announce:
        announce(exp, len(cells), resume)

    t0 = time.perf_counter()
    trainable = tune.with_resources(
        trainable_for(packs), {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    )
    connect(address, num_cpus, None, data_dir, exp)  # GPUs: Ray detects them
    try:
        check_resources(cpus_per_trial, gpus_per_trial)
        if plan is not None and not has_manifest(exp):
            write_manifest(exp, plan, data_dir, pack, packs)  # the first thing
        callbacks = [ProgressCallback(len(cells))] if show_progress else []
        if resume:
            log.info("resuming %s", exp)
            tuner = tune.Tuner.restore(
                exp, trainable, resume_unfinished=True, resume_errored=True
            )
            # a restored Tuner keeps the callbacks it was pickled with; ours
            # replace them so the progress bar reflects this run
            tuner._local_tuner._run_config.callbacks = callbacks
        else:
            log.info("starting %s with %d trials", exp, len(cells))
            tuner = new_tuner(
                trainable,
                search_space(cells, packs),
                storage,
                name,
                callbacks=callbacks,
                max_concurrent=max_concurrent,
                max_failures=max_failures,
            )
        # Tune's advice on an interrupt is Tuner.restore; ours, `sweep resume`,
        # is printed by the CLI
        logging.getLogger("ray.tune.tune").addFilter(_not_tune_restore_advice)
        # after ray.init, whose C++ core installs a SIGTERM handler of its own
        # (it logs a stack trace and dies, skipping Tune's last state save)
        with sigterm_as_sigint() as received, hold(exp):
            grid = tuner.fit()
    finally:
        ray.shutdown()

    # finished: our final report, or Tune's "done" for a trial that had
    # finished before a resume and returned at once (sweep.trial.stored_summary);
    # counted in cells, a pack's cells finishing one by one
    errors = [f"{r.path}: {_first_line(r.error)}" for r in grid if r.error]
    finished = failed = 0
    for r in grid:
        n = len(r.config["pack"]["cells"]) if "pack" in (r.config or {}) else 1
        metrics = r.metrics or {}
        done = n if metrics.get(m.FINAL) or metrics.get("done") else 0
        if r.error or not done:
            done = min(n, int(metrics.get(m.CELLS_DONE) or 0))
        finished += done
        failed += n - done if r.error else 0
    outcome = Outcome(
        exp, len(cells), finished, failed, errors, time.perf_counter() - t0
    )
    if outcome.n_unfinished:
        outcome.interrupted = received[0] if received else signal.SIGINT
    return outcome


def any_trial_started(exp: str) -> bool:
    """Whether a trial directory of a local sweep holds results or checkpoints."""
    return any(
        (d / "result.json").exists() or any(d.glob("checkpoint_*"))
        for d in Path(exp).iterdir()
        if d.is_dir()
    )


def plan_packs(
    cells: list[dict], pack: int, cpus_per_trial: float = 1
) -> list[list[int]] | None:
    """The cells of each Tune trial when packing, None for one cell a trial.

    Warns of what packing changes: at shapes where this machine's stacked
    kernels round differently (`sweep.packing.packs_exactly`), and for cells
    with a time limit, which counts the pack's wall time.
    """
    if pack <= 1:
        return None
    import torch

    from sweep.config import TrialConfig
    from sweep.data import image_shape
    from sweep.packing import pack_groups, packs_exactly

    configs = [TrialConfig.from_dict(c) for c in cells]
    packs = pack_groups(configs, pack)
    shapes: dict[tuple, int] = {}  # a pack shape: its largest pack
    for p in (p for p in packs if len(p) > 1):
        c = configs[p[0]]
        key = (image_shape(c), c.n_train, c.width, c.depth, c.nonlinearity)
        shapes[key] = max(shapes.get(key, 0), len(p))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus_per_trial)))  # as the trials will run
    try:
        inexact = [
            key
            for key, k in shapes.items()
            if not packs_exactly(
                key[0], key[1], width=key[2], depth=key[3], nonlinearity=key[4],
                sizes=(1, 2, k),
            )
        ]  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    for _, n, width, depth, nonlinearity in inexact:
        log.warning(
            "packed %s nets of width %d, depth %d on %d images round differently "
            "on this machine than alone: they match unpacked runs to ~1e-7 a step, "
            "not bit for bit",
            nonlinearity, width, depth, n,
        )  # fmt: skip
    if any(configs[i].time_limit_s > 0 for p in packs if len(p) > 1 for i in p):
        log.warning(
            "time_limit_s counts a pack's wall time: packed cells that reach it "
            "stop at other epochs than they would alone"
        )
    return packs


def trainable_for(packs: list[list[int]] | None) -> Callable[[dict], None]:
    if packs is None:
        from sweep.trial import train_cell

        return train_cell
    from sweep.packed_trial import train_pack

    return train_pack


def search_space(cells: list[dict], packs: list[list[int]] | None) -> dict:
    """One grid axis: `cell`, full config dicts, or `pack`, their packs."""
    from ray import tune

    if packs is None:
        return {"cell": tune.grid_search(cells)}
    return {
        "pack": tune.grid_search(
            [{"cells": p, "configs": [cells[i] for i in p]} for p in packs]
        )
    }


def new_tuner(
    trainable: Any,
    space: dict,
    storage: str,
    name: str,
    *,
    callbacks: list,
    max_concurrent: int,
    max_failures: int,
) -> Any:
    """A Tuner over `space`, one grid axis (see `search_space`)."""
    from ray import tune

    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            max_concurrent_trials=max_concurrent or None,
            trial_dirname_creator=lambda t: t.trial_id,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def _not_tune_restore_advice(record: logging.LogRecord) -> bool:
    return "Tuner.restore" not in record.getMessage()


def _first_line(error: BaseException) -> str:
    lines = [ln for ln in str(error).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
