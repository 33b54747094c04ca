"""Train K trials of one shape as one batched model: K times the work per step.

Trials that differ only in seed, initialization, learning rate, target or data
(of one shape) can share every training step: `PackedFC` stacks K fully
connected nets and runs them as batched matmuls, (K, n, d) -> (K, n, d), and
`PackedTrainer` trains the K at once, full batch, each on its own MSE.

Each member gets exactly its own trial's update:
- the loss is the sum of the K MSEs, so member k's gradient is that of its own
  MSE (the nets share no weights);
- the optimizer is PyTorch's own (`sweep.training.make_optimizer`), one per
  learning rate, over each member's own views of the stacked weights (one
  tensor per member and layer, shaped as alone), so every elementwise update
  (Adam's moments, bias corrections, ...) is the same code on the same
  tensor shapes as the trial alone, rounded the same way;
- a member that stops (converged, diverged, ...) at a check is *retired*:
  its weights and optimizer state are taken out of the pack, which shrinks,
  so it stops costing compute and stays exactly as it was when it stopped.
On one CPU thread a member matches its trial alone bit for bit at the shapes
where the stacked kernels round as single ones (`packs_exactly` tells; every
shape of the catalog does, tested). At other shapes, with more threads, or on
a GPU, a batched matmul may sum in another order than a
single one, as a change of thread count does for a trial alone; runs trained
to MSE 1e-8 then end on nearby but not identical weights.

`run_packed` mirrors `sweep.trial.run_trial` for K compatible configs.
"""

from sweep.packing.nets import PackedFC, PackingError, packs_exactly
from sweep.packing.trainer import Member, PackedTrainer
from sweep.packing.trials import (
    MUST_MATCH,
    check_packable,
    initial_model,
    pack_groups,
    run_packed,
    train_packed,
)

__all__ = [
    "MUST_MATCH",
    "Member",
    "PackedFC",
    "PackedTrainer",
    "PackingError",
    "check_packable",
    "initial_model",
    "packs_exactly",
    "pack_groups",
    "run_packed",
    "train_packed",
]
