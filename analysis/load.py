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
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from sweep import metrics as m
from sweep.config import TrialConfig

SWEEP_FILE = "sweep.json"
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
MEASUREMENTS_FILE = "measurements.json"  # names as sweep/trial.py writes them
GALLERY_FILE = "gallery.npz"

STATUSES = ("finished", "running", "error", "pending")
CONFIG_FIELDS = tuple(f.name for f in fields(TrialConfig))
TABLES = ("sweeps", "trials", "examples", "cycles", "starts", "spurious")

# Ray's bookkeeping in each result row; not metrics of ours
RAY_FIELDS = {
    "config", "trial_id", "date", "timestamp", "pid", "hostname", "node_ip",
    "time_this_iter_s", "time_since_restore", "iterations_since_restore",
    "timesteps_total", "episodes_total", "timesteps_since_restore", "done",
    "experiment_id", "experiment_tag", "should_checkpoint", "checkpoint_dir_name",
    m.FINAL,
}  # fmt: skip
# Ray's default trial dir name <trainable>_<5 hex>_<5 digits>_... holds the id
TRIAL_ID = re.compile(r"([0-9a-f]{5}_\d{5})")


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
    sweeps, trials, children = [], [], {k: [] for k in TABLES[2:]}

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


def is_trial(path: Path) -> bool:
    files = (path / PARAMS_FILE, path / RESULT_FILE)
    return any(f.exists() for f in files) or any(path.glob("checkpoint_*"))


def read_sweep(sweep_dir: Path, warnings: list[str]) -> tuple[dict, list]:
    """The sweep's metadata row and one (row, child rows) record per trial."""
    meta, cells = _read_meta(sweep_dir, warnings)

    # a directory written by `sweep trial` is itself the one trial
    dirs = [sweep_dir] if is_trial(sweep_dir) else trial_dirs(sweep_dir)
    records = [r for d in dirs if (r := read_trial(d, meta["sweep"], cells, warnings))]

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


def _read_meta(sweep_dir: Path, warnings: list[str]) -> tuple[dict, list]:
    """The sweep's row of the sweeps table and its planned cells (config dicts)."""
    meta = {"sweep": sweep_dir.name, "sweep_dir": str(sweep_dir)}
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        return meta, []
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        warnings.append(f"{meta['sweep']}: unreadable {SWEEP_FILE} ({err}); ignored")
        return meta, []
    keep = ("schema", "figure", "profile", "created", "n_trials", "notes", "git")
    meta.update({k: doc.get(k) for k in keep})
    cells = doc.get("trials") if isinstance(doc.get("trials"), list) else []
    if meta["n_trials"] is None and cells:
        meta["n_trials"] = len(cells)
    return meta, cells


def read_trial(
    trial_dir: Path, sweep: str, cells: list[dict], warnings: list[str]
) -> tuple | None:
    """One trial's row of the trials table and its rows of the child tables."""
    name = f"{sweep}/{trial_dir.name}"
    rows = read_results(trial_dir / RESULT_FILE, name, warnings)
    final = next((r for r in reversed(rows) if r.get(m.FINAL)), None)
    doc, checkpoint = read_measurements(trial_dir, final, name, warnings)
    if final is None and doc is not None:
        final = {**doc.get("summary", {}), m.FINAL: True}
    config = trial_config(trial_dir, doc, cells, name, warnings)
    if config is None:
        return None
    last = final or (rows[-1] if rows else {})

    # status: our final report wins, since Ray keeps the error.txt of a failure
    # that a retry (FailureConfig.max_failures) later recovered from
    error = trial_dir / ERROR_FILE
    started = rows or any(trial_dir.glob("checkpoint_*"))
    if final or not error.exists():
        status = "finished" if final else ("running" if started else "pending")
    else:
        status = "error"
    row = {
        "trial_id": last.get("trial_id") or _trial_id(trial_dir),
        "sweep": sweep,
        "status": status,
        **config,
        **{k: v for k, v in last.items() if _is_metric(k, v) and k not in config},
        "n_reports": len(rows),
        "error": _last_line(error) if error.exists() else None,
        "trial_dir": str(trial_dir),
    }

    # measurements live in the final checkpoint
    child: dict[str, list[dict]] = {k: [] for k in TABLES[2:]}
    if doc is not None:
        row["image_shape"] = tuple(doc.get("image_shape") or ()) or None
        row["gallery"] = str(checkpoint / GALLERY_FILE)
        keys = {"trial_id": row["trial_id"], "sweep": sweep}
        child = _child_rows(doc, keys, config, final.get(m.CONVERGED))
    return row, child


def _is_metric(key: str, value) -> bool:
    """Our scalars in a result row; Ray's bookkeeping and nested dicts are not."""
    return key not in RAY_FIELDS and not isinstance(value, dict | list)


def trial_config(
    trial_dir: Path, doc: dict | None, cells: list[dict], name: str, warnings
) -> dict | None:
    """params.json, else the config in measurements.json, else the planned cell."""
    config = None
    if (trial_dir / PARAMS_FILE).exists():
        config = read_params(trial_dir / PARAMS_FILE, name, warnings)
    if config is None and doc is not None and isinstance(doc.get("config"), dict):
        config = doc["config"]
    index = _trial_id(trial_dir).rpartition("_")[2]
    if config is None and index.isdigit() and int(index) < len(cells):
        config = cells[int(index)]
    if config is None:
        warnings.append(f"{name}: no {PARAMS_FILE} and no measurements; skipped")
        return None
    return {**TrialConfig().to_dict(), **config}


def read_params(path: Path, name: str, warnings: list[str]) -> dict | None:
    """The config in params.json: Ray wraps it as {"cell": ...}, `sweep trial` not."""
    try:
        params = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        warnings.append(f"{name}: unreadable {PARAMS_FILE} ({err})")
        return None
    return params.get("cell", params) if isinstance(params, dict) else None


def read_results(path: Path, name: str, warnings: list[str]) -> list[dict]:
    """The JSON lines of result.json; a malformed line is skipped with a warning."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            where = "cut-short last line" if i == len(lines) - 1 else f"line {i + 1}"
            warnings.append(f"{name}: skipped a malformed {where} of {RESULT_FILE}")
    return rows


def read_measurements(
    trial_dir: Path, final: dict | None, name: str, warnings: list[str]
) -> tuple[dict | None, Path | None]:
    """measurements.json of the final checkpoint (named by the final report)."""
    named = (final or {}).get("checkpoint_dir_name")
    candidates = [trial_dir / named] if named else []
    candidates += sorted(trial_dir.glob("checkpoint_*"), reverse=True)
    candidates.append(trial_dir)  # a flat layout keeps them beside result.json
    for checkpoint in candidates:
        path = checkpoint / MEASUREMENTS_FILE
        if path.exists():
            try:
                return json.loads(path.read_text()), checkpoint
            except json.JSONDecodeError as err:
                warnings.append(f"{name}: unreadable {path.name} ({err})")
                return None, None
    if final is not None:
        warnings.append(
            f"{name}: finished but no {MEASUREMENTS_FILE} in its final checkpoint"
        )
    return None, None


def _child_rows(doc: dict, keys: dict, config: dict, converged) -> dict:
    """Rows of the child tables: ids, the measured fields, then the config."""

    def rows(items: list[dict], extra=lambda item: {}) -> list[dict]:
        out = []
        for item in items:
            measured = {**item, **extra(item)}
            rest = {k: v for k, v in config.items() if k not in measured}
            out.append({**keys, **measured, m.CONVERGED: converged, **rest})
        return out

    # distinct spurious attractors each start kind reached (figs 5b, 11-14)
    spurious = doc.get("spurious") or []

    def distinct(start: dict) -> dict:
        hit = [s for s in spurious if s.get(f"hits_{start['start_kind']}", 0) > 0]
        stable = sum(bool(s.get("stable")) for s in hit)
        return {
            "distinct_spurious": stable,
            "distinct_spurious_unstable": len(hit) - stable,
        }

    return {
        "examples": rows(doc.get("examples") or []),
        "cycles": rows(doc.get("cycles") or []),
        "starts": rows(doc.get("starts") or [], distinct),
        "spurious": rows(spurious),
    }


def _trial_id(trial_dir: Path) -> str:
    match = TRIAL_ID.search(trial_dir.name)
    return match.group(1) if match else trial_dir.name


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


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
