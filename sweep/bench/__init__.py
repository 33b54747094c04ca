"""Benchmarks: our paths against plain versions, side by side in one process.

`python -m sweep.bench` prints one table (`--quick` in a minute or two,
`--smoke` in seconds for the tests, `--json PATH` to keep the numbers):

- train    steps/s of `sweep.training.Trainer` vs the plainest full-batch loop,
           and the limit set by this machine's matmul rate and memory bandwidth
- iterate  `sweep.dynamics.iterate` on many starts vs one start at a time
- spectra  matrix-free (ARPACK) vs dense Jacobian spectral radius
- pack     `sweep.packing.PackedTrainer` (K trials as one model) vs K trainers
- sweep    a small sweep through Ray Tune vs the same cells in-process (full
           run only: it starts a local Ray)
- packsweep  a sweep with `--pack` vs the same sweep one trial a cell (full run
           only, Ray too)

The suite is in `sweep.bench.suite`; each benchmark has a module of its own.
"""
