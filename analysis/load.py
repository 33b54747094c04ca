"""Read sweep directories into DataFrames.

A sweep directory is what Ray Tune wrote for one experiment (`<storage>/<name>/`)
plus our `sweep.json`; each trial subdirectory holds `params.json`, the JSON lines
of `result.json`, and in its last checkpoint the `measurements.json` and
`gallery.npz` of `sweep/trial.py`. Ray's own state files are never read (they
are pickles). Trials may still be running while we read, so a cut-short last
line or a missing checkpoint is a warning, not an error.

The final checkpoint alone suffices: measurements.json repeats the config and
the final metrics, so a trial whose params.json and result.json Ray has not
synced to storage yet still loads (its config, failing that, is the sweep.json
cell with the trial's grid index: Ray numbers the grid_search variants in order).
Reading one trial directory is `analysis.trialdir`; this module finds the
sweeps and their trials and assembles the tables.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from analysis.trialdir import (
    CHILD_TABLES,
    ERROR_FILE,
    GALLERY_FILE,
    MEASUREMENTS_FILE,
    PARAMS_FILE,
    RAY_FIELDS,
    RESULT_FILE,
    TRIAL_ID,
    is_trial,
    read_measurements,
    read_params,
    read_results,
    read_trial,
    read_trials,
    trial_config,
)
from sweep import metrics as m
from sweep.config import TrialConfig
from sweep.driver import live_driver
from sweep.manifest import packs_of

SWEEP_FILE = "sweep.json"

STATUSES = ("finished", "running", "stopped", "error", "pending")
CONFIG_FIELDS = tuple(f.name for f in fields(TrialConfig))
TABLES = ("sweeps", "trials", *CHILD_TABLES)

# the sweep-level API, plus the trial-directory readers of analysis.trialdir
# that used to live here
__all__ = [
    "SWEEP_FILE", "STATUSES", "CONFIG_FIELDS", "TABLES", "ResultsError",
    "Results", "load_sweeps", "sweep_dirs", "is_sweep", "trial_dirs",
    "read_sweep", "save_tables", "PARAMS_FILE", "RESULT_FILE", "ERROR_FILE",
    "MEASUREMENTS_FILE", "GALLERY_FILE", "RAY_FIELDS", "TRIAL_ID", "is_trial",
    "read_trial", "read_trials", "trial_config", "read_params", "read_results",
    "read_measurements",
]  # fmt: skip


class ResultsError(ValueError):
    """A path given to the analysis is missing or holds no sweep results."""


@dataclass
class Results:
    """Every table of one or more sweeps; child tables carry the trial's config."""

    sweeps: pd.DataFrame  # one row per sweep directory (its sweep.json)
    trials: pd.DataFrame  # one row per trial: status, config fields, final metrics
    examples: pd.DataFrame  # one row per (trial, training example)
    cycles: pd.DataFrame  # one row per (trial, stored cycle)
    starts: pd.DataFrame  # one row per (trial, start kind): outcome counts
    spurious: pd.DataFrame  # one row per (trial, attractor outside the training set)
    warnings: list[str] = field(default_factory=list)

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    @property
    def planned(self) -> int | None:
        """Trials the sweeps plan (their sweep.json), or None when none says."""
        planned = self.sweeps.get("n_trials")
        if planned is None or planned.isna().all():
            return None
        return int(planned.fillna(0).sum())


def load_sweeps(paths: str | Path | list[str | Path]) -> Results:
    """Load every trial of the given sweep directories (or one storage dir of them)."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    warnings: list[str] = []
    sweeps, trials, children = [], [], {k: [] for k in CHILD_TABLES}

    # expand each path into sweep directories, each read once
    dirs: list[Path] = []
    for path in paths:
        dirs += [d for d in sweep_dirs(Path(path)) if d not in dirs]

    for sweep_dir in dirs:
        meta, records = read_sweep(sweep_dir, warnings)
        sweeps.append(meta)
        for row, child in records:
            trials.append(row)
            for name, rows in child.items():
                children[name] += rows

    frames = {name: pd.DataFrame(rows) for name, rows in children.items()}
    return Results(
        sweeps=pd.DataFrame(sweeps),
        trials=_trials_frame(trials),
        warnings=warnings,
        **{name: _tidy(frame) for name, frame in frames.items()},
    )


def sweep_dirs(path: Path) -> list[Path]:
    """The sweep directories at a path: itself, or the sweeps inside a storage dir."""
    if not path.exists():
        raise ResultsError(
            f"no such results directory: {path}; "
            "pass a sweep directory (<storage>/<name>) that a sweep wrote"
        )
    if not path.is_dir():
        raise ResultsError(
            f"{path} is a file, not a sweep directory; pass the directory that holds it"
        )
    path = path.resolve()
    if is_sweep(path) or is_trial(path):
        return [path]
    inner = sorted(d for d in path.iterdir() if d.is_dir() and is_sweep(d))
    if not inner:
        raise ResultsError(
            f"{path} is not a sweep directory: no {SWEEP_FILE} and no trial "
            f"subdirectory with {PARAMS_FILE}; pass the directory a sweep wrote"
        )
    return inner


def is_sweep(path: Path) -> bool:
    return (path / SWEEP_FILE).exists() or bool(trial_dirs(path))


def trial_dirs(sweep_dir: Path) -> list[Path]:
    """Subdirectories with a trial's params, results or checkpoints."""
    return sorted(d for d in sweep_dir.iterdir() if d.is_dir() and is_trial(d))


def read_sweep(sweep_dir: Path, warnings: list[str]) -> tuple[dict, list]:
    """The sweep's metadata row and one (row, child rows) record per trial."""
    meta, cells, packs = _read_meta(sweep_dir, warnings)

    # a directory written by `sweep trial` is itself the one trial
    dirs = [sweep_dir] if is_trial(sweep_dir) else trial_dirs(sweep_dir)
    records = [
        r for d in dirs for r in read_trials(d, meta["sweep"], cells, warnings, packs)
    ]

    # a trial that started, has not finished and has no live driver was stopped
    # (Ctrl-C, a crash); `sweep resume` continues it
    if live_driver(sweep_dir) is None:
        for row, _ in records:
            if row["status"] == "running":
                row["status"] = "stopped"

    # a sweep whose trials have not all started yet is normal while it runs
    planned = meta.get("n_trials")
    if not records:
        plan = f" ({planned} planned)" if planned is not None else ""
        warnings.append(f"{meta['sweep']}: no trial has started yet{plan}")
    elif planned is not None and len(records) < planned:
        warnings.append(
            f"{meta['sweep']}: {len(records)} of {planned} planned trials "
            "have started; the rest are not in the tables yet"
        )
    return meta, records


def _read_meta(sweep_dir: Path, warnings: list[str]) -> tuple[dict, list, list | None]:
    """The sweep's row of the sweeps table, its planned cells (config dicts) and,
    for a packed sweep, the cells of each trial."""
    meta = {"sweep": sweep_dir.name, "sweep_dir": str(sweep_dir)}
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        return meta, [], None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        warnings.append(f"{meta['sweep']}: unreadable {SWEEP_FILE} ({err}); ignored")
        return meta, [], None
    keep = ("schema", "figure", "profile", "created", "n_trials", "notes", "git")
    meta.update({k: doc.get(k) for k in keep})
    meta["pack"] = doc.get("pack", 1)
    cells = doc.get("trials") if isinstance(doc.get("trials"), list) else []
    if meta["n_trials"] is None and cells:
        meta["n_trials"] = len(cells)
    return meta, cells, packs_of(doc) if isinstance(doc, dict) else None


def _trials_frame(rows: list[dict]) -> pd.DataFrame:
    """Trials with a fixed set of leading columns, present even when empty."""
    lead = ["trial_id", "sweep", "status", *CONFIG_FIELDS, *m.PROGRESS, *m.SUMMARY]
    lead = list(dict.fromkeys(lead))  # n_train is both a field and a metric
    frame = pd.DataFrame(rows)
    for col in lead:
        if col not in frame:
            frame[col] = None if col in (m.STOP_REASON, m.CONVERGED) else math.nan
    frame[m.CONVERGED] = frame[m.CONVERGED].astype("boolean")
    rest = [c for c in frame.columns if c not in lead]
    return _tidy(frame[lead + rest])


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Booleans with gaps as pandas' nullable boolean, sorted by trial."""
    for col in frame.columns:
        values = frame[col].dropna()
        if len(values) and values.map(lambda v: isinstance(v, bool)).all():
            frame[col] = frame[col].astype("boolean")
    keys = [c for c in ("sweep", "trial_id") if c in frame]
    return (
        frame.sort_values(keys, kind="stable").reset_index(drop=True) if keys else frame
    )


def save_tables(results: Results, out_dir: str | Path) -> list[Path]:
    """Write every table as Parquet and CSV; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TABLES:
        frame = results.table(name)
        # plain text for nested values: Parquet cannot store an empty dict
        flat = frame.apply(
            lambda col: col.map(_as_text) if col.dtype == object else col
        )
        flat.to_parquet(out / f"{name}.parquet", index=False)
        flat.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.parquet", out / f"{name}.csv"]
    return written


def _as_text(value):
    """Tuples (image shapes) as 1x28x28; dicts and lists (sweep notes) as JSON."""
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return json.dumps(value) if isinstance(value, dict | list) else value
