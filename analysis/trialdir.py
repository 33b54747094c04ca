"""Read one trial directory: its config, its result rows and its final measurements.

A trial directory is what Ray Tune wrote for one trial: `params.json`, the JSON
lines of `result.json`, `error.txt` after a failure, and in its last checkpoint
the `measurements.json` and `gallery.npz` of `sweep/trial.py` (a directory
written by `sweep trial` keeps them flat, beside result.json). Trials may still
be running while we read, so a cut-short last line or a missing checkpoint is a
warning, not an error. `analysis.load` gathers the trials of whole sweeps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sweep import metrics as m
from sweep.config import TrialConfig
from sweep.packing.files import cell_dir_name

PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
MEASUREMENTS_FILE = "measurements.json"  # names as sweep/trial.py writes them
GALLERY_FILE = "gallery.npz"

# the tables a trial adds rows to besides its own row of the trials table
CHILD_TABLES = ("examples", "cycles", "starts", "spurious")

# Ray's bookkeeping in each result row; not metrics of ours
RAY_FIELDS = {
    "config", "trial_id", "date", "timestamp", "pid", "hostname", "node_ip",
    "time_this_iter_s", "time_since_restore", "iterations_since_restore",
    "timesteps_total", "episodes_total", "timesteps_since_restore", "done",
    "experiment_id", "experiment_tag", "should_checkpoint", "checkpoint_dir_name",
    m.FINAL, m.CELLS_DONE, m.N_CELLS,
}  # fmt: skip
# Ray's default trial dir name <trainable>_<5 hex>_<5 digits>_... holds the id
TRIAL_ID = re.compile(r"([0-9a-f]{5}_\d{5})")


def is_trial(path: Path) -> bool:
    """Whether a directory holds a trial's params, results or checkpoints."""
    files = (path / PARAMS_FILE, path / RESULT_FILE)
    return any(f.exists() for f in files) or any(path.glob("checkpoint_*"))


def read_trials(
    trial_dir: Path,
    sweep: str,
    cells: list[dict],
    warnings: list[str],
    packs: list[list[int]] | None = None,
) -> list[tuple]:
    """The records of one trial directory: one, or one per cell of a pack.

    `packs` are the sweep.json's cells of each trial of a packed sweep.
    """
    name = f"{sweep}/{trial_dir.name}"
    params = None
    if (trial_dir / PARAMS_FILE).exists():
        params = read_params(trial_dir / PARAMS_FILE, name, warnings)
    pack = params.get("pack") if isinstance(params, dict) else None
    if pack is None and packs is not None:
        index = _trial_id(trial_dir).rpartition("_")[2]
        if index.isdigit() and int(index) < len(packs):
            ids = packs[int(index)]
            pack = {"cells": ids, "configs": [cells[i] for i in ids]}
    if pack is not None:
        return read_pack(trial_dir, sweep, pack, warnings)
    record = read_trial(trial_dir, sweep, cells, warnings)
    return [record] if record else []


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
    trial_id = last.get("trial_id") or _trial_id(trial_dir)
    record = _record(
        trial_dir, sweep, trial_id, config, rows, final, last, doc, checkpoint
    )
    record[0]["pack"] = None  # a trial of its own
    return record


def read_pack(
    trial_dir: Path, sweep: str, pack: dict, warnings: list[str]
) -> list[tuple]:
    """One record per cell of a packed trial (see sweep.packing.files).

    A cell's final record is in the newest checkpoint holding its folder's
    measurements.json; a cell still training shows its own progress metrics
    from the pack's last result row.
    """
    name = f"{sweep}/{trial_dir.name}"
    rows = read_results(trial_dir / RESULT_FILE, name, warnings)
    pack_id = next((r["trial_id"] for r in rows if "trial_id" in r), None)
    pack_id = pack_id or _trial_id(trial_dir)
    named = next((r.get("checkpoint_dir_name") for r in reversed(rows)), None)
    checkpoints = [trial_dir / named] if named else []
    checkpoints += sorted(trial_dir.glob("checkpoint_*"), reverse=True)
    records = []
    for cell, cfg in zip(pack["cells"], pack["configs"], strict=True):
        folder = cell_dir_name(int(cell))
        doc, checkpoint = read_measurements(
            trial_dir,
            None,
            f"{name}/{folder}",
            warnings,
            [c / folder for c in checkpoints],
        )
        final = {**doc.get("summary", {}), m.FINAL: True} if doc else None
        prefix = f"{folder}/"
        last = final or {
            k[len(prefix) :]: v
            for k, v in (rows[-1] if rows else {}).items()
            if k.startswith(prefix)
        }
        config = {**TrialConfig().to_dict(), **cfg}
        trial_id = f"{pack_id}.{int(cell):05d}"  # sorts as the cells do
        record = _record(
            trial_dir, sweep, trial_id, config, rows, final, last, doc, checkpoint
        )
        record[0]["pack"] = pack_id
        records.append(record)
    return records


def _record(
    trial_dir: Path,
    sweep: str,
    trial_id: str,
    config: dict,
    rows: list[dict],
    final: dict | None,
    last: dict,
    doc: dict | None,
    checkpoint: Path | None,
) -> tuple[dict, dict]:
    # status: our final report wins, since Ray keeps the error.txt of a failure
    # that a retry (FailureConfig.max_failures) later recovered from
    error = trial_dir / ERROR_FILE
    started = rows or any(trial_dir.glob("checkpoint_*"))
    if final or not error.exists():
        status = "finished" if final else ("running" if started else "pending")
    else:
        status = "error"
    row = {
        "trial_id": trial_id,
        "sweep": sweep,
        "status": status,
        **config,
        **{k: v for k, v in last.items() if _is_metric(k, v) and k not in config},
        "n_reports": len(rows),
        "error": _last_line(error) if error.exists() else None,
        "trial_dir": str(trial_dir),
    }

    # measurements live in the final checkpoint
    child: dict[str, list[dict]] = {k: [] for k in CHILD_TABLES}
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
    text = path.read_text()
    if not text.strip():
        return None  # Ray rewrites it in place when it restores a trial
    try:
        params = json.loads(text)
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
    trial_dir: Path,
    final: dict | None,
    name: str,
    warnings: list[str],
    candidates: list[Path] | None = None,
) -> tuple[dict | None, Path | None]:
    """measurements.json of the final checkpoint (named by the final report),
    or of the first of `candidates` that holds one."""
    if candidates is None:
        named = (final or {}).get("checkpoint_dir_name")
        candidates = [trial_dir / named] if named else []
        candidates += sorted(trial_dir.glob("checkpoint_*"), reverse=True)
        candidates.append(trial_dir)  # `sweep trial` keeps them beside result.json
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
