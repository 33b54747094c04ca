"""`python -m sweep.bench`: time our paths against plain versions, print a table."""

from __future__ import annotations

import json
import os
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from sweep.bench.suite import BENCHES, LEGENDS, run
from sweep.bench.timing import format_table, machine
from sweep.data import DATA_DIR_ENV

Bench = Enum("Bench", {b: b for b in BENCHES}, type=str)
QUICK_SKIPS = ("sweep", "packsweep")  # start Ray: a minute each

app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller runs: a minute or two.")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Tiny sizes, seconds: for the tests.")
    ] = False,
    only: Annotated[
        list[Bench] | None,
        typer.Option("--only", help="Run just these benchmarks (repeatable)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the numbers here.")
    ] = None,
    device: Annotated[
        str,
        typer.Option(help="Where the pack benchmark runs: cpu, or cuda on a GPU."),
    ] = "cpu",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar=DATA_DIR_ENV,
            exists=True,
            file_okay=False,
            help="Directory with the real MNIST and CIFAR-10 files.",
        ),
    ] = None,
) -> None:
    """Time our paths against plain baselines in one process; print the ratios.

    Each version runs interleaved with its baseline, round after round; times
    are medians over rounds and a speedup is the median of per-round ratios.
    """
    if data_dir:
        os.environ[DATA_DIR_ENV] = str(data_dir.resolve())  # for Ray workers too
    mode = "smoke" if smoke else "quick" if quick else "full"
    skipped = QUICK_SKIPS if mode != "full" else ()
    names = (
        [b.value for b in only] if only else [b for b in BENCHES if b not in skipped]
    )
    before = machine()
    start = time.perf_counter()
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter(f"--device {device!r}: pass cpu or cuda")
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"--device {device}: no CUDA device is visible")
    rows = run(mode, names, device)
    elapsed = time.perf_counter() - start

    # the machine and the method above the table, so a pasted table stands alone
    after = machine()
    typer.echo(
        f"{before['cpu']}, {before['cores']} cores, torch {before['torch']}, "
        f"{before['torch_threads']} default threads, OMP_WAIT_POLICY "
        f"{before['omp_wait_policy']}"
    )
    typer.echo(
        f"mode {mode}; load average {before['load_avg_1m']} before, "
        f"{after['load_avg_1m']} after; {elapsed:.0f} s"
    )
    typer.echo(
        "times: median over interleaved rounds (other processes share this "
        "machine); speedup: median of per-round plain/ours\n"
    )
    typer.echo(format_table(rows))
    typer.echo("")
    for name in names:
        typer.echo(LEGENDS[name])
    if json_path:
        document = {
            "mode": mode,
            "machine": before,
            "load_avg_1m_after": after["load_avg_1m"],
            "elapsed_s": elapsed,
            "rows": [r.as_dict() for r in rows],
        }
        json_path.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    app()
