"""The names of a trial's reported metrics, defined once.

The trial reports these keys through Ray Tune, the CLI prints them, and
`analysis/` reads them back as DataFrame columns.
"""

# progress, reported every `report_every` epochs
EPOCHS = "epochs"
MSE = "mse"
LOG10_MSE = "log10_mse"
TRAIN_S = "train_s"

# a packed trial (several cells trained as one batched model) also reports
CELLS_DONE = "cells_done"  # its cells with a final record
N_CELLS = "n_cells"

# final record only
FINAL = "final"  # True on the one report that carries every measurement
STOP_REASON = "stop_reason"  # converged | cap | diverged | time
CONVERGED = "converged"  # training MSE reached target_mse
MEASURE_S = "measure_s"
N_TRAIN = "n_train"
N_CYCLES = "n_cycles"
N_FIXED_POINTS = "n_fixed_points"  # examples with f(x_i) = x_{i+1} within tolerance
N_ATTRACTORS = "n_attractors"  # L = 1: training examples stored as attractors
N_STABLE_CYCLES = "n_stable_cycles"  # stored cycles that are stable limit cycles
N_STORED = "n_stored"  # examples in stable stored cycles (L = 1: n_attractors)
MAX_RADIUS = "max_radius"  # largest Jacobian spectral radius over the examples
MEDIAN_RADIUS = "median_radius"
N_SPURIOUS = "n_spurious"  # distinct stable attractors outside the training set
N_SPURIOUS_UNSTABLE = "n_spurious_unstable"

OUTCOMES = (
    "train",
    "cycle",
    "spurious_fixed",
    "spurious_cycle",
    "diverged",
    "unsettled",
)
START_KINDS = ("test", "noise")


def outcome_metric(start_kind: str, outcome: str) -> str:
    """Column name for how many starts of one kind ended in one outcome."""
    return f"{start_kind}_{outcome}"


PROGRESS = (EPOCHS, MSE, LOG10_MSE, TRAIN_S)
SUMMARY = (
    STOP_REASON,
    CONVERGED,
    MEASURE_S,
    N_TRAIN,
    N_CYCLES,
    N_FIXED_POINTS,
    N_ATTRACTORS,
    N_STABLE_CYCLES,
    N_STORED,
    MAX_RADIUS,
    MEDIAN_RADIUS,
    N_SPURIOUS,
    N_SPURIOUS_UNSTABLE,
) + tuple(outcome_metric(k, o) for k in START_KINDS for o in OUTCOMES)
