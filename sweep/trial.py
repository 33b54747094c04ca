"""One trial: load real data, train to interpolation, measure what is stored.

`run_trial` wires the science modules together and talks to the outside world
only through a `Sink`: `RaySink` inside a Ray Tune trial (progress through
`tune.report`, state through Tune checkpoints), `LocalSink` for one trial in
this process with no Ray runtime (the CLI's `trial` command). Both write the
same files, so `analysis/` reads either.

Files of a finished trial (in its final checkpoint directory):
  state.pt           training state (weights, optimizer, epoch, RNG)
  measurements.json  config, training summary and every measurement
  gallery.npz        training images and a few trajectories, float16
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
from ray import tune

from sweep import data
from sweep import metrics as m
from sweep.config import ConfigError, TrialConfig
from sweep.measure import SCHEMA_VERSION, Starts, measure, summarize
from sweep.models import initial_model
from sweep.training import Trainer, load_state, make_optimizer, save_state

STATE_FILE = "state.pt"
MEASUREMENTS_FILE = "measurements.json"
GALLERY_FILE = "gallery.npz"
EXPERIMENT_ENV = "SWEEP_EXPERIMENT"  # the sweep directory, set by sweep.launcher


class Sink(Protocol):
    def finished(self) -> dict | None: ...

    def restore(self) -> dict | None: ...

    def report(self, metrics: dict, checkpoint: Path | None) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is visible; use device=cpu")
    return torch.device(name)


def load_inputs(
    cfg: TrialConfig, data_dir: str | None = None
) -> tuple[torch.Tensor, Starts, tuple[int, ...]]:
    """Training images (n, d), starting points and the image shape (c, h, w)."""
    kw = dict(image_size=cfg.image_size, grey=cfg.grey, data_dir=data_dir)
    n = cfg.n_train * cfg.stride
    train = data.images(cfg.dataset, "train", n, subset_seed=cfg.subset_seed, **kw)
    train = train[:: cfg.stride]  # (n_train, c, h, w)
    shape = tuple(train.shape[1:])
    n_test = 0 if cfg.dataset == "movie" else cfg.n_test_starts
    test = (
        data.images(cfg.dataset, "test", n_test, **kw)
        if n_test
        else torch.empty(0, *shape)
    )
    noise = data.noise(
        cfg.noise,
        cfg.n_noise_starts,
        shape,
        mean=cfg.noise_mean,
        std=cfg.noise_std,
        low=cfg.noise_low,
        high=cfg.noise_high,
        seed=cfg.seed,
    )
    d = math.prod(shape)
    flat = lambda x: x.reshape(len(x), d)  # noqa: E731  (n, c, h, w) -> (n, d)
    return flat(train), Starts(test=flat(test), noise=flat(noise)), shape


def sequence_targets(train: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Targets x_{c,j+1}, the last of each cycle mapping to its first."""
    n, d = train.shape
    cycles = train.reshape(n // seq_len, seq_len, d)
    return cycles.roll(-1, dims=1).reshape(n, d)


def run_trial(cfg: TrialConfig, sink: Sink, data_dir: str | None = None) -> dict:
    """Train and measure one configuration; return the final metrics."""
    # a trial whose final record is stored already is not run again
    done = sink.finished()
    if done is not None:
        return done
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    # data: flattened images in [0, 1]
    train, starts, shape = load_inputs(cfg, data_dir)
    train = train.to(device)
    targets = sequence_targets(train, cfg.seq_len)

    # model, seeded so the same config gives the same network
    model = initial_model(cfg, shape).to(device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum)
    trainer = Trainer(
        model,
        optimizer,
        train,
        targets,
        target_mse=cfg.target_mse,
        max_epochs=cfg.max_epochs,
        check_every=cfg.check_every,
        time_limit_s=cfg.time_limit_s,
    )

    # resume: a retried or restored trial continues where its checkpoint left off
    state = sink.restore()
    if state is not None:
        trainer.load_state_dict(state)
    last_checkpoint = trainer.epoch

    # train, reporting progress and checkpointing the state now and then
    while not trainer.done:
        trainer.run(cfg.report_every)
        if trainer.done:
            break
        checkpoint_due = trainer.epoch - last_checkpoint >= cfg.checkpoint_every
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if checkpoint_due:
                save_state(trainer.state_dict(), Path(tmp) / STATE_FILE)
                checkpoint, last_checkpoint = Path(tmp), trainer.epoch
            sink.report(progress(trainer), checkpoint)

    # measure the trained map, unless training blew up
    t0 = time.perf_counter()
    model.eval()
    summary = trainer.summary()
    record, gallery = None, {}
    if summary.stop_reason != "diverged":
        cycles = train.reshape(cfg.n_cycles, cfg.seq_len, -1)
        record, gallery = measure(
            model, cycles, Starts(starts.test.to(device), starts.noise.to(device)), cfg
        )
    final = progress(trainer)
    final.update(
        {
            m.FINAL: True,
            m.STOP_REASON: summary.stop_reason,
            m.CONVERGED: bool(summary.mse <= cfg.target_mse),
            m.MEASURE_S: time.perf_counter() - t0,
        }
    )
    final.update(summarize(record, cfg) if record else empty_summary(cfg))

    # the final checkpoint carries every measurement
    with tempfile.TemporaryDirectory() as tmp:
        save_state(trainer.state_dict(), Path(tmp) / STATE_FILE)
        document = {
            "schema": SCHEMA_VERSION,
            "config": cfg.to_dict(),
            "image_shape": list(shape),
            "training": {
                "epochs": summary.epochs,
                "mse": _finite(summary.mse),
                "train_s": summary.train_s,
                "stop_reason": summary.stop_reason,
            },
            "summary": {k: _jsonable(v) for k, v in final.items()},
            **(record or {"examples": [], "cycles": [], "starts": [], "spurious": []}),
        }
        write_json(Path(tmp) / MEASUREMENTS_FILE, document)
        np.savez_compressed(Path(tmp) / GALLERY_FILE, **gallery)
        sink.report(final, Path(tmp))
    return final


def progress(trainer: Trainer) -> dict:
    mse = trainer.mse
    return {
        m.EPOCHS: trainer.epoch,
        m.MSE: mse,
        m.LOG10_MSE: math.log10(mse) if mse > 0 and math.isfinite(mse) else math.nan,
        m.TRAIN_S: trainer.summary().train_s,
    }


def empty_summary(cfg: TrialConfig) -> dict:
    """Measurements of a trial that could not be measured: unknown, not zero."""
    values = {k: math.nan for k in m.SUMMARY}
    values.pop(m.STOP_REASON)
    values.pop(m.CONVERGED)
    values.pop(m.MEASURE_S)
    values[m.N_TRAIN] = cfg.n_train
    values[m.N_CYCLES] = cfg.n_cycles
    return values


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def stored_checkpoints(trial_path: str) -> tuple[pafs.FileSystem, str, list[str]]:
    """A stored trial's filesystem, its root there, and its checkpoint_*
    directory names, newest first (local paths or pyarrow URIs)."""
    if "://" in trial_path:
        fs, root = pafs.FileSystem.from_uri(trial_path)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(trial_path).resolve())
    listing = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = [i.base_name for i in listing if i.base_name.startswith("checkpoint_")]
    return fs, root, sorted(names, reverse=True)


def stored_trial_path() -> str | None:
    """This Tune trial's directory on the sweep's storage (None outside a sweep):
    the launcher names the sweep directory, and trial dirs are named by id."""
    experiment = os.environ.get(EXPERIMENT_ENV)
    if not experiment:
        return None
    return experiment.rstrip("/") + "/" + tune.get_context().get_trial_id()


def stored_summary(trial_path: str) -> dict | None:
    """The final summary of a trial whose final checkpoint is already stored.

    Only the final checkpoint holds measurements.json. A driver killed right
    after a trial finished leaves Tune's last snapshot listing that trial as
    running, so a resumed sweep starts it again; this is how it knows not to.
    """
    fs, root, names = stored_checkpoints(trial_path)
    for name in names:
        path = f"{root}/{name}/{MEASUREMENTS_FILE}"
        if fs.get_file_info(path).type == pafs.FileType.File:
            with fs.open_input_stream(path) as src:
                return json.loads(src.read())["summary"]
    return None


def write_json(path: Path, document: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    text = json.dumps(document, indent=1, allow_nan=False)  # fails before writing
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)  # a rename within one directory: atomic
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no stray temporary
        raise


class LocalSink:
    """Runs a trial in this process and lays files out as a Tune trial does."""

    def __init__(self, trial_dir: Path, cfg: TrialConfig):
        self.dir = Path(trial_dir)
        params = self.dir / "params.json"
        # a directory is this cell's own, or empty: never mix two runs' files
        if params.exists():
            try:
                same = json.loads(params.read_text()) == cfg.to_dict()
            except (OSError, ValueError):
                same = False
            if not same:
                raise ConfigError(
                    f"{self.dir} holds another configuration's trial; "
                    "pass an empty or new --out directory"
                )
        elif self.dir.is_dir() and any(self.dir.iterdir()):
            raise ConfigError(
                f"{self.dir} is not empty and holds no trial; pass an empty or new "
                "--out directory"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        if not params.exists():
            write_json(params, cfg.to_dict())
        self.iteration = 0

    def _checkpoints(self) -> list[Path]:
        return sorted(self.dir.glob("checkpoint_*"))

    def finished(self) -> dict | None:
        return stored_summary(str(self.dir))

    def restore(self) -> dict | None:
        for ck in reversed(self._checkpoints()):
            if (ck / STATE_FILE).exists():
                return load_state(ck / STATE_FILE)
        return None

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        self.iteration += 1
        row = {k: _jsonable(v) for k, v in metrics.items()}
        row["training_iteration"] = self.iteration
        if checkpoint is not None:
            target = self.dir / f"checkpoint_{len(self._checkpoints()):06d}"
            staging = self.dir / (target.name + ".partial")
            shutil.copytree(checkpoint, staging)
            os.replace(staging, target)
            row["checkpoint_dir_name"] = target.name
        with open(self.dir / "result.json", "a") as fh:
            fh.write(json.dumps(row) + "\n")


class RaySink:
    """Inside a Ray Tune trial: progress through `tune.report`, state as checkpoints."""

    def finished(self) -> dict | None:
        path = stored_trial_path()
        return stored_summary(path) if path else None

    def restore(self) -> dict | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as d:
            path = Path(d) / STATE_FILE
            return load_state(path) if path.exists() else None

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        # Tune copies the directory before report returns, so the caller's
        # temporary directory may vanish right after
        ck = tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        tune.report(metrics, checkpoint=ck)


def train_cell(config: dict) -> None:
    """The Ray Tune trainable: one cell of a sweep, given as config["cell"]."""
    cfg = TrialConfig.from_dict(config["cell"])
    # Tune logs every checkpoint it stores; the progress line says enough
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    run_trial(cfg, RaySink())  # data dir: SWEEP_DATA_DIR from the runtime env
