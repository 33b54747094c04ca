"""The files of a pack of cells that run as one Ray Tune trial.

A packed trial keeps every cell's files in one checkpoint directory, one
folder per cell named by the cell's index in the sweep:

  checkpoint_000004/
    cell_00003/  state.pt                                (still training)
    cell_00007/  state.pt  measurements.json  gallery.npz  (finished)

Each checkpoint holds every cell, so the newest one alone says how far the
whole pack got: finished cells keep their final record, the others their last
training state. `PackFiles` is that directory while the trial runs; each cell
talks to it through a `CellSink`, the same three calls `sweep.trial.run_trial`
makes of any sink, and whoever owns the pack sends `flush()`'s metrics and
directory on as one report (`sweep.packed_trial` does, through Tune).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from sweep import metrics as m

STATE_FILE = "state.pt"  # the names sweep.trial writes
MEASUREMENTS_FILE = "measurements.json"


def cell_dir_name(cell: int) -> str:
    return f"cell_{cell:05d}"


def cell_metric(cell: int, name: str) -> str:
    """A cell's own progress metric in the pack's result rows, e.g. cell_00003/mse."""
    return f"{cell_dir_name(cell)}/{name}"


class PackFiles:
    """A pack's checkpoint directory under construction, and its metrics."""

    def __init__(self, root: Path, cells: Sequence[int]):
        self.root, self.cells = Path(root), list(cells)
        self.progress: dict[int, dict] = {}  # each cell's latest progress report
        self.changed = False  # files changed since the last flush

    def cell(self, index: int) -> CellSink:
        return CellSink(self, index)

    def dir(self, cell: int) -> Path:
        return self.root / cell_dir_name(cell)

    def load(self, checkpoint: Path) -> None:
        """Start from a stored checkpoint of this pack (every cell's folder)."""
        for cell in self.cells:
            source = Path(checkpoint) / cell_dir_name(cell)
            if source.is_dir():
                self.adopt(cell, source)

    def adopt(self, cell: int, source: Path) -> None:
        """Take a cell's files from `source` (a finished or checkpointed cell)."""
        target = self.dir(cell)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        summary = self.summary(cell)
        if summary is not None:
            self.progress[cell] = {k: summary.get(k) for k in (*m.PROGRESS, m.FINAL)}
        self.changed = True

    def summary(self, cell: int) -> dict | None:
        """The final metrics of a finished cell, None while it is not finished."""
        path = self.dir(cell) / MEASUREMENTS_FILE
        if not path.exists():
            return None
        return json.loads(path.read_text())["summary"]

    def report(self, cell: int, metrics: dict, checkpoint: Path | None) -> None:
        self.progress[cell] = dict(metrics)
        if checkpoint is not None:
            self.adopt(cell, checkpoint)

    @property
    def n_finished(self) -> int:
        return sum(bool(self.progress.get(c, {}).get(m.FINAL)) for c in self.cells)

    def flush(self) -> tuple[dict, Path | None]:
        """The pack's report now: its metrics, and its directory if it changed.

        Pack-wide progress is that of the slowest cell still training (most
        epochs, highest MSE); each cell's own is under `cell_metric` names.
        """
        running = [p for p in self.progress.values() if not p.get(m.FINAL)]
        running = running or list(self.progress.values())
        mses = [p[m.MSE] for p in running if _finite(p.get(m.MSE))]
        metrics = {
            m.EPOCHS: max((p.get(m.EPOCHS) or 0 for p in running), default=0),
            m.MSE: max(mses) if mses else math.nan,
            m.TRAIN_S: max((p.get(m.TRAIN_S) or 0.0 for p in running), default=0.0),
            m.CELLS_DONE: self.n_finished,
            m.N_CELLS: len(self.cells),
        }
        metrics[m.LOG10_MSE] = (
            math.log10(metrics[m.MSE]) if mses and metrics[m.MSE] > 0 else math.nan
        )
        if self.n_finished == len(self.cells):
            metrics[m.FINAL] = True
        for cell, progress in sorted(self.progress.items()):
            for name in m.PROGRESS:
                if name in progress:
                    metrics[cell_metric(cell, name)] = progress[name]
        changed, self.changed = self.changed, False
        return metrics, (self.root if changed else None)


class CellSink:
    """One cell of a pack, seen as the `sweep.trial.Sink` that run_trial uses."""

    def __init__(self, files: PackFiles, cell: int):
        self.files, self.index = files, cell

    def finished(self) -> dict | None:
        return self.files.summary(self.index)

    def restore(self) -> dict | None:
        from sweep.training import load_state

        path = self.files.dir(self.index) / STATE_FILE
        return load_state(path) if path.exists() else None

    def report(self, metrics: dict, checkpoint: Path | None) -> None:
        self.files.report(self.index, metrics, checkpoint)


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
