"""The paper's tables, each a pure function of a results DataFrame.

Cells average over seeds. A seed counts only when its training reached
`target_mse` (the paper's criterion, e.g. MSE <= 1e-8 for figs 3, 4, 6): an
"is it an attractor" count of a map that does not interpolate answers a
different question. A cell where no seed converged is NA, never 0 (fig 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sweep import metrics as m
from sweep.config import TrialConfig

NA = "NA"
SCIENTIFIC = ("mse", "target_mse", "lr")  # columns printed as 1.2e-09
DECIMALS = 1  # cell means are counts of examples: one decimal tells seeds apart
# config fields that are bookkeeping, not sweep axes
NOT_AXES = ("figure", "seed", "device")

# the grouping axis of each outcome figure (figs 5b and 14 pool every run)
OUTCOME_AXES = {
    "fig5b": (),
    "fig11": ("optimizer",),
    "fig12": ("nonlinearity",),
    "fig13": ("init", "init_scale"),
    "fig14": (),
}


def finished(frame: pd.DataFrame, converged_only: bool = True) -> pd.DataFrame:
    """Rows of trials that finished (and, by default, reached the target MSE)."""
    keep = pd.Series(True, index=frame.index)
    if "status" in frame:
        keep &= frame["status"] == "finished"
    if converged_only:
        keep &= frame[m.CONVERGED].fillna(False).astype(bool)
    return frame[keep]


def seed_spread(
    frame: pd.DataFrame,
    value: str,
    by: Sequence[str] = (),
    converged_only: bool = True,
) -> pd.DataFrame:
    """Mean, sample std (ddof 1) and count `k` of `value` over each group's seeds.

    `n` counts every trial of the group (running and errored ones too), so a
    reader sees when k < n seeds went into a mean.
    """
    by = list(by)
    used = finished(frame, converged_only).dropna(subset=[value])
    stats = (
        used.groupby(by, dropna=False)[value].agg(["mean", "std", "count"])
        if by
        else pd.DataFrame(
            {"mean": [used[value].mean()], "std": [used[value].std()],
             "count": [used[value].count()]}
        )
    )  # fmt: skip
    stats = stats.rename(columns={"count": "k"})
    counts = _counts(frame, by)
    out = counts.join(stats, how="left") if by else pd.concat([counts, stats], axis=1)
    out["k"] = out["k"].fillna(0).astype(int)
    return out.reset_index(drop=not by)[[*by, "mean", "std", "k", "n", "n_finished"]]


def _counts(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Trials (n) and finished trials (n_finished) per group."""
    done = frame["status"] == "finished" if "status" in frame else True
    counts = pd.DataFrame({"n": 1, "n_finished": done}, index=frame.index)
    if not by:
        return pd.DataFrame({"n": [len(frame)], "n_finished": [int(np.sum(done))]})
    return counts.join(frame[by]).groupby(by, dropna=False).sum().astype(int)


def grid_table(
    trials: pd.DataFrame,
    rows: Sequence[str],
    cols: Sequence[str],
    value: str,
    out_of: str | None = None,
    converged_only: bool = True,
) -> pd.DataFrame:
    """One row per cell of a rows x cols grid: numbers and a display string.

    Columns: the row and column keys, `mean`, `std`, `k` (seeds averaged),
    `n` (trials in the cell), `n_finished`, `out_of` (e.g. n_train) and
    `text`, "mean ± std of out_of (k seeds)" or NA. `wide` pivots it.
    A cell averages seeds only: any other config field that varies within
    a cell (an axis added to a figure's sweep) becomes a leading row key.
    """
    _check_columns(trials, [*rows, *cols, value] + ([out_of] if out_of else []))
    rows = [*extra_axes(trials, [*rows, *cols]), *rows]
    keys = [*rows, *cols]
    grid = seed_spread(trials, value, keys, converged_only)

    # the denominator: n_train for stored examples, n_cycles for cycles
    if out_of:
        totals = _cell_total(trials, keys, out_of)
        grid = (
            grid.merge(totals, on=keys, how="left")
            if keys
            else grid.assign(out_of=totals)
        )
    else:
        grid["out_of"] = math.nan
    grid["text"] = [_cell_text(r) for r in grid.itertuples()]
    grid.attrs.update(rows=list(rows), cols=list(cols), value=value)
    return grid


def extra_axes(trials: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Config fields besides the seed that vary among trials of equal `keys`."""
    fields = [f for f in varying(trials) if f not in keys]
    if not keys or not fields:
        return fields
    within = trials.groupby(list(keys), dropna=False)[fields].nunique(dropna=False)
    return [f for f in fields if (within[f] > 1).any()]


def _check_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise KeyError(
            f"missing column(s) {', '.join(missing)}; pass the trials table "
            "of analysis.load_sweeps (it has every config field and metric)"
        )


def _cell_total(trials: pd.DataFrame, keys: list[str], out_of: str):
    if not keys:
        return trials[out_of].max()
    totals = trials.groupby(keys, dropna=False)[out_of].max()
    return totals.rename("out_of").reset_index()


def _cell_text(cell) -> str:
    if cell.k == 0:
        if cell.n_finished == 0:
            return f"{NA} (none of {cell.n} finished)"
        return f"{NA} (0 of {cell.n_finished} seeds converged)"
    text = f"{cell.mean:.{DECIMALS}f}"
    if cell.k > 1:
        text += f" ± {cell.std:.{DECIMALS}f}"
    if not pd.isna(cell.out_of):
        text += f" of {cell.out_of:g}"
    seeds = "seed" if cell.n == 1 else "seeds"
    shown = f"{cell.k} {seeds}" if cell.k == cell.n else f"{cell.k} of {cell.n} {seeds}"
    return f"{text} ({shown})"


def wide(grid: pd.DataFrame, field: str = "text") -> pd.DataFrame:
    """A grid table as the paper prints it: rows down, columns across."""
    rows, cols = grid.attrs.get("rows", []), grid.attrs.get("cols", [])
    if not rows and not cols:
        return grid[[field]]
    if not cols:
        return grid.set_index(rows)[[field]].rename(
            columns={field: grid.attrs["value"]}
        )
    index = rows or None
    table = grid.pivot_table(
        index=index, columns=cols, values=field, aggfunc="first", dropna=False
    )
    return table


def fig3(trials: pd.DataFrame) -> pd.DataFrame:
    """Training examples stored as attractors, optimizer x nonlinearity."""
    return grid_table(
        trials, ["optimizer"], ["nonlinearity"], m.N_ATTRACTORS, out_of=m.N_TRAIN
    )


def fig4(trials: pd.DataFrame, cols: Sequence[str] = ()) -> pd.DataFrame:
    """Attractors per initialization scheme and its scale a of U[-a, a]."""
    return grid_table(
        trials, ["init", "init_scale"], cols, m.N_ATTRACTORS, out_of=m.N_TRAIN
    )


def fig6(trials: pd.DataFrame) -> pd.DataFrame:
    """Attractors among the MNIST training examples, width x depth."""
    return grid_table(trials, ["width"], ["depth"], m.N_ATTRACTORS, out_of=m.N_TRAIN)


def fig8(trials: pd.DataFrame, cols: Sequence[str] = ()) -> pd.DataFrame:
    """Stored sequences that are stable limit cycles, out of the cycles trained."""
    return grid_table(
        trials, ["n_train", "seq_len"], cols, m.N_STABLE_CYCLES, out_of=m.N_CYCLES
    )


def fig9(trials: pd.DataFrame, cols: Sequence[str] = ()) -> pd.DataFrame:
    """Examples stored (in stable cycles) as the n are split into cycles of length L."""
    return grid_table(trials, ["seq_len"], cols, m.N_STORED, out_of=m.N_TRAIN)


def outcomes(
    starts: pd.DataFrame, by: Sequence[str] = (), converged_only: bool = True
) -> pd.DataFrame:
    """Where iteration from each kind of start ends, summed over a group's runs.

    `train` and `cycle`: starts that reached a training example or stored cycle;
    `outside`: an attractor outside the training set (fixed point or orbit);
    `nothing`: diverged or still moving after the step cap. `distinct_spurious`
    sums, over the group's networks, the distinct stable attractors outside the
    training set that this start kind reached (each network has its own).
    """
    by = list(by)
    _check_columns(starts, [*by, "start_kind", *m.OUTCOMES])
    used = finished(starts, converged_only).assign(
        outside=lambda f: f["spurious_fixed"] + f["spurious_cycle"],
        nothing=lambda f: f["diverged"] + f["unsettled"],
    )
    sums = ["n", "train", "cycle", "outside", "nothing", "distinct_spurious"]
    table = used.groupby([*by, "start_kind"], dropna=False).agg(
        n_trials=("trial_id", "nunique"), **{c: (c, "sum") for c in sums}
    )
    table = table.rename(columns={"n": "n_starts"}).reset_index()
    table["frac_train"] = table["train"] / table["n_starts"]
    return table


def hits_per_example(
    examples: pd.DataFrame, by: Sequence[str] = (), converged_only: bool = True
) -> pd.DataFrame:
    """Starts that reached each training example, summed over a group's runs.

    The runs of a sweep share their training examples (the first n of the
    split), so example i is the same image in every run.
    """
    by = list(by)
    _check_columns(examples, [*by, "index", "hits_test", "hits_noise"])
    used = finished(examples, converged_only)
    table = used.groupby([*by, "index"], dropna=False).agg(
        hits_test=("hits_test", "sum"),
        hits_noise=("hits_noise", "sum"),
        stored=("stored", "sum"),
        n_trials=("trial_id", "nunique"),
    )
    return table.reset_index()


def varying(trials: pd.DataFrame) -> list[str]:
    """Config fields that take more than one value: the sweep's axes."""
    fields = [f for f in TrialConfig().to_dict() if f not in NOT_AXES]
    return [f for f in fields if f in trials and trials[f].nunique(dropna=False) > 1]


TRIAL_COLUMNS = (
    "status", m.STOP_REASON, m.CONVERGED, m.EPOCHS, m.MSE, m.TRAIN_S,
    m.N_ATTRACTORS, m.N_STABLE_CYCLES, m.N_STORED, m.N_SPURIOUS, m.MAX_RADIUS,
)  # fmt: skip


def trial_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """One line per trial: its sweep axes, seed, how training went, what it stored."""
    sweep = ["sweep"] if trials["sweep"].nunique() > 1 else []
    columns = [*sweep, "trial_id", *varying(trials), "seed", *TRIAL_COLUMNS]
    return trials[[c for c in columns if c in trials]].reset_index(drop=True)


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as text: MSE-like columns in scientific notation, NA for gaps."""
    out = frame.copy()
    for col in out.columns:
        name = "_".join(map(str, col)) if isinstance(col, tuple) else str(col)
        if not pd.api.types.is_float_dtype(out[col]):
            continue
        sci = name in SCIENTIFIC or name.endswith("_mse")
        out[col] = out[col].map(lambda v, s=sci: _number(v, s))
    return out.astype(object).where(out.notna(), NA)


def _number(value: float, scientific: bool) -> str:
    if pd.isna(value):
        return NA
    if scientific:
        return f"{value:.2e}"
    return f"{value:g}" if float(value).is_integer() else f"{value:.3g}"
