"""Build and run the Ray Tune experiment behind a sweep.

This module and `sweep.trial` are the only places that import Ray. Decisions,
each measured on Ray Tune 2.60 (see the README's notes on Ray):
- FIFO scheduling, no early stopping: every cell trains to the MSE target or
  its cap, because the converged network is what we measure.
- The grid is expanded and validated here, then handed to Tune as one grid
  axis `cell` of full config dicts, so a bad cell fails before Ray starts.
- `reuse_actors=True` (14x less per-trial overhead), short trial dir names,
  `FailureConfig(max_failures=2)` so a killed worker retries from its last
  checkpoint, never `fail_fast` (it strands in-flight trials).
- Local Ray binds loopback only and runs without the dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from sweep import __version__
from sweep import metrics as m

log = logging.getLogger("sweep")

MANIFEST = "sweep.json"
MANIFEST_SCHEMA = 1

# Ray's switch that maps the node address to 127.0.0.1 and binds every port
# there; without it a local instance listens on all interfaces
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "1",
    # result.json and params.json come from Tune's auto loggers: keep them
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
}


class LaunchError(RuntimeError):
    """The sweep cannot start or resume; the message says why and what to do."""


@dataclass
class Plan:
    figure: str
    profile: str
    trials: list[dict[str, Any]]
    notes: dict[str, str]


def is_uri(storage: str) -> bool:
    return "://" in storage


def experiment_path(storage: str, name: str) -> str:
    if is_uri(storage):
        return storage.rstrip("/") + "/" + name
    return str(Path(storage).expanduser().resolve() / name)


def check_storage(storage: str) -> str:
    """Make sure results can be written there; return the normalized path."""
    if is_uri(storage):
        try:
            fs, path = pafs.FileSystem.from_uri(storage)
            fs.create_dir(path, recursive=True)
        except Exception as exc:  # pyarrow raises many kinds
            raise LaunchError(f"storage {storage!r} is not usable: {exc}") from None
        return storage
    path = Path(storage).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise LaunchError(
            f"storage {storage!r} is a file, not a directory; pass --storage DIR"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise LaunchError(
            f"storage {storage!r} is not writable ({exc.strerror}); "
            "pass --storage with a directory you can write"
        ) from None
    return str(path)


def provenance(data_dir: str | None, datasets: set[str]) -> dict[str, Any]:
    """Git revision, library versions and data checksums, for the manifest."""
    import numpy
    import ray
    import torch

    from sweep import data

    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    return {
        "git": git or None,
        "versions": {
            "sweep": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "numpy": numpy.__version__,
        },
        "data": {d: data.checksums(d, data_dir) for d in sorted(datasets)},
    }


def write_manifest(exp: str, plan: Plan, data_dir: str | None) -> None:
    """Record what this sweep is before any trial runs (atomically)."""
    document = {
        "schema": MANIFEST_SCHEMA,
        "figure": plan.figure,
        "profile": plan.profile,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n_trials": len(plan.trials),
        "notes": plan.notes,
        "trials": plan.trials,
        **provenance(data_dir, {t["dataset"] for t in plan.trials}),
    }
    text = json.dumps(document, indent=1)
    if is_uri(exp):
        fs, path = pafs.FileSystem.from_uri(exp)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{MANIFEST}") as out:
            out.write(text.encode())
        return
    Path(exp).mkdir(parents=True, exist_ok=True)
    tmp = Path(exp) / (MANIFEST + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, Path(exp) / MANIFEST)


def read_manifest(exp: str) -> dict[str, Any]:
    try:
        if is_uri(exp):
            fs, path = pafs.FileSystem.from_uri(exp)
            with fs.open_input_stream(f"{path}/{MANIFEST}") as src:
                text = src.read().decode()
        else:
            text = (Path(exp) / MANIFEST).read_text()
    except (OSError, FileNotFoundError):
        raise LaunchError(
            f"{exp} is not a sweep directory (no {MANIFEST}); "
            "pass the directory that `sweep run` printed"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise LaunchError(f"{exp}/{MANIFEST} is cut short or corrupt") from None
    if document.get("schema") != MANIFEST_SCHEMA:
        raise LaunchError(
            f"{exp} was written by an incompatible version "
            f"(manifest schema {document.get('schema')!r}, this is "
            f"{MANIFEST_SCHEMA}); rerun it with the version that made it"
        )
    return document


def connect(
    address: str | None,
    num_cpus: int | None,
    num_gpus: int | None,
    data_dir: str | None,
) -> None:
    """Start local Ray on loopback, or join the cluster at `address`."""
    import ray

    env = {"SWEEP_DATA_DIR": str(Path(data_dir).resolve())} if data_dir else {}
    os.environ.update(QUIET_ENV)
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # 'local' always starts a fresh instance: a stale cluster file left by
        # an earlier `ray start` would otherwise make init hang
        os.environ.update(LOOPBACK_ENV)
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        return
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise LaunchError(
            f"no Ray cluster at {address!r} ({first}); start one with `ray up "
            "cluster.yaml` or `ray start --head`, or drop --address to run locally"
        ) from None


def check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse a per-trial request that fits no node: it would wait forever."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = any(
        n["Resources"].get("CPU", 0) >= cpus_per_trial
        and n["Resources"].get("GPU", 0) >= gpus_per_trial
        for n in nodes
    )
    if not fits:
        biggest = max(
            (
                (n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0))
                for n in nodes
            ),
            default=(0, 0),
        )
        raise LaunchError(
            f"each trial asks for {cpus_per_trial} CPU and {gpus_per_trial} GPU but "
            f"the largest node has {biggest[0]:g} CPU and {biggest[1]:g} GPU; "
            "lower --cpus-per-trial / --gpus-per-trial"
        )


@dataclass
class Outcome:
    path: str
    n_trials: int
    n_finished: int
    n_errors: int
    errors: list[str]
    wall_s: float


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
    show_progress: bool = True,
) -> Outcome:
    """Run (or, with `resume`, continue) the sweep at storage/name."""
    import ray
    from ray import tune

    from sweep.progress import ProgressCallback
    from sweep.trial import train_cell

    storage = check_storage(storage)
    exp = experiment_path(storage, name)
    trainable = tune.with_resources(
        train_cell, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    )
    restorable = tune.Tuner.can_restore(exp)
    if resume and not restorable:
        read_manifest(exp)  # names the problem if it is not a sweep at all
        raise LaunchError(f"{exp} has no Ray Tune state to resume; run it anew")
    if not resume and plan is not None:
        if restorable:
            old = read_manifest(exp)
            if old["trials"] != plan.trials:
                raise LaunchError(
                    f"{exp} already holds a sweep with a different search space; "
                    "pass --name NEW to start another, or `sweep resume` it"
                )
            resume = True  # same sweep: continue it rather than start over
        else:
            write_manifest(exp, plan, data_dir)
    manifest = read_manifest(exp)
    n_trials = manifest["n_trials"]

    t0 = time.perf_counter()
    connect(address, num_cpus, None if address else 0, data_dir)
    try:
        check_resources(cpus_per_trial, gpus_per_trial)
        callbacks = [ProgressCallback(n_trials)] if show_progress else []
        if resume:
            log.info("resuming %s", exp)
            tuner = tune.Tuner.restore(
                exp, trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            log.info("starting %s with %d trials", exp, n_trials)
            tuner = tune.Tuner(
                trainable,
                param_space={"cell": tune.grid_search(manifest["trials"])},
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
        if resume and callbacks:
            # a restored Tuner keeps the callbacks it was pickled with; ours
            # replace them so the progress bar reflects this run
            tuner._local_tuner._run_config.callbacks = callbacks
        grid = tuner.fit()
    finally:
        ray.shutdown()

    errors = [f"{r.path}: {_first_line(r.error)}" for r in grid if r.error]
    finished = sum(
        1 for r in grid if r.metrics and r.metrics.get(m.FINAL) and not r.error
    )
    return Outcome(
        exp, n_trials, finished, len(errors), errors, time.perf_counter() - t0
    )


def _first_line(error: BaseException) -> str:
    lines = [ln for ln in str(error).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
