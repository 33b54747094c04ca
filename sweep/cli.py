"""The `sweep` command line: launch, resume, inspect and report sweeps."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import zipfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from sweep import catalog
from sweep.config import ConfigError, TrialConfig, coerce

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Sweeps that test whether overparameterized networks store their "
    "training data as attractors (Radhakrishnan, Belkin & Uhler, PNAS 2020).",
)

Profile = Enum("Profile", {p: p for p in catalog.PROFILES}, type=str)
DEFAULT_STORAGE = "results"
ASSUMED_FLOPS_PER_CORE = 2e10  # a rough CPU core, for `list`'s estimates only


def user_errors(fn):
    """Turn a user's mistake into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from analysis.load import ResultsError
        from sweep.data import DataError
        from sweep.launcher import LaunchError
        from sweep.models import ModelError
        from sweep.training import TrainingError

        try:
            return fn(*args, **kwargs)
        except (
            ConfigError,
            LaunchError,
            DataError,
            ModelError,
            TrainingError,
            ResultsError,
        ) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except (UnicodeDecodeError, zipfile.BadZipFile) as exc:
            # a results or config file that is not what it claims to be
            typer.echo(f"error: a file is damaged or not text ({exc})", err=True)
            raise typer.Exit(2) from None

    return wrapper


# -- building a plan from a figure, a profile and overrides ---------------------


def parse_sets(sets: list[str]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """`field=value` fixes a field; `field=a,b,c` makes it a grid axis."""
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r} is not field=value; e.g. --set width=512"
            )
        name, value = (s.strip() for s in item.split("=", 1))
        values = [coerce(name, v.strip()) for v in value.split(",")]
        if len(values) == 1:
            fixed[name] = values[0]
        else:
            axes[name] = values
    return fixed, axes


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A YAML or JSON mapping: scalars fix fields, lists become grid axes."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text; pass a YAML file") from None
    except yaml.YAMLError as exc:
        # PyYAML's message spans lines (it quotes the source); keep its gist
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"config file {path} is not valid YAML{where}: {problem}"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    fixed, axes = {}, {}
    for name, value in document.items():
        if isinstance(value, list):
            axes[name] = [coerce(name, v) for v in value]
        else:
            fixed[name] = coerce(name, value)
    return fixed, axes


def make_plan(
    figure: str,
    profile: str,
    sets: list[str],
    config: Path | None,
    pack: int = 1,
    at_once: int = 1,
) -> tuple[catalog.Sweep, Any]:
    """The sweep and its cells, checked to fit this machine's memory with
    `at_once` trials (packs of up to `pack` cells) side by side."""
    from sweep.launcher import Plan
    from sweep.memory import check_memory

    sweep = catalog.get_sweep(figure, profile)
    fixed, axes = read_config_file(config) if config else ({}, {})
    more_fixed, more_axes = parse_sets(sets)
    fixed.update(more_fixed)
    axes.update(more_axes)
    if fixed or axes:
        sweep = sweep.with_overrides(fixed, axes)
    trials = sweep.trials()
    check_memory(trials, pack, at_once)
    return sweep, Plan(sweep.figure, sweep.profile, trials, sweep.notes)


def estimate_core_hours(trials: list[dict[str, Any]]) -> float:
    """Upper bound at the epoch cap: ~6 flops per parameter per example."""
    import torch

    from sweep.data import image_shape
    from sweep.models import build_model, n_params

    total = 0.0
    for cell in trials:
        cfg = TrialConfig.from_dict(cell)
        with torch.device("meta"):  # count parameters without allocating them
            model = build_model(
                cfg.model,
                image_shape(cfg),
                width=cfg.width,
                depth=cfg.depth,
                nonlinearity=cfg.nonlinearity,
            )
        total += 6.0 * n_params(model) * cfg.n_train * cfg.max_epochs
    return total / ASSUMED_FLOPS_PER_CORE / 3600


# -- commands -------------------------------------------------------------------


@app.command("list")
@user_errors
def list_sweeps() -> None:
    """List the figures and profiles, with trial counts and a rough cost."""
    typer.echo(f"{'figure':8} {'profile':7} {'trials':>6} {'core-h at cap':>14}  what")
    for figure in catalog.FIGURES:
        for profile in catalog.PROFILES:
            sweep = catalog.get_sweep(figure, profile)
            hours = estimate_core_hours(sweep.trials())
            feeds = f" (also {', '.join(sweep.feeds)})" if sweep.feeds else ""
            what = sweep.description + feeds if profile == "paper" else ""
            typer.echo(
                f"{figure:8} {profile:7} {sweep.n_trials:>6} {hours:>14.3g}  {what}"
            )
    for derived, source in catalog.DERIVED.items():
        typer.echo(f"{derived:8} drawn from the trials of {source}")
    typer.echo(
        "core-h: worst case, every trial running to its epoch cap on one CPU core "
        f"at {ASSUMED_FLOPS_PER_CORE:.0e} flop/s; most converge far earlier."
    )


StorageOpt = Annotated[
    str, typer.Option(help="Directory or pyarrow URI (s3://...) for results.")
]
SetOpt = Annotated[
    list[str],
    typer.Option("--set", help="field=value, or field=a,b,c for a grid axis."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster address ('auto', 'ray://...'); default local."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(exists=True, file_okay=False, help="Directory holding the datasets."),
]


@app.command()
@user_errors
def run(
    figure: Annotated[str, typer.Argument(help="A figure of `sweep list`.")],
    profile: Annotated[Profile, typer.Option(help="Size of the sweep.")] = "quick",
    storage: StorageOpt = DEFAULT_STORAGE,
    name: Annotated[str | None, typer.Option(help="Sweep name.")] = None,
    set_: SetOpt = [],  # noqa: B006  (typer needs a literal default)
    config: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="YAML/JSON.")
    ] = None,
    address: AddressOpt = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.01)] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    max_concurrent: Annotated[int, typer.Option(min=0, help="0: no cap.")] = 0,
    num_cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs of a local Ray.")
    ] = None,
    pack: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train up to K fully connected cells of one shape as one batched "
            "model per trial (its CPUs/GPUs are --cpus/--gpus-per-trial).",
        ),
    ] = 1,
    data_dir: DataDirOpt = None,
    verbose: bool = False,
) -> None:
    """Run a figure's sweep through Ray Tune, then print its summary."""
    from sweep import launcher

    launcher.setup_logging(verbose)
    from sweep.memory import trials_at_once

    local = not (address or os.environ.get("RAY_ADDRESS"))  # clusters: unknown
    at_once = trials_at_once(num_cpus, cpus_per_trial, max_concurrent) if local else 1
    sweep, plan = make_plan(figure, profile.value, set_, config, pack, at_once)
    if name is not None and (
        not name.strip() or "/" in name or "\\" in name or name in (".", "..")
    ):
        raise ConfigError(
            f"--name {name!r} must be a plain directory name (no '/', not empty)"
        )
    outcome = launcher.run(
        plan,
        storage,
        name or f"{sweep.figure}-{sweep.profile}",
        address=address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        num_cpus=num_cpus,
        data_dir=str(data_dir) if data_dir else None,
        pack=pack,
        announce=functools.partial(announce, f"{sweep.figure} ({sweep.profile})"),
    )
    finish(outcome)


def announce(what: str, path: str, n_trials: int, resuming: bool) -> None:
    """One line on stderr once every check has passed and Ray is starting."""
    verb = "resuming" if resuming else "running"
    typer.echo(f"{what}: {verb} {n_trials} trials -> {path}", err=True)


@app.command()
@user_errors
def resume(
    directory: Annotated[str, typer.Argument(help="A sweep directory.")],
    address: AddressOpt = None,
    cpus_per_trial: Annotated[float, typer.Option(min=0.01)] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    num_cpus: Annotated[int | None, typer.Option(min=1)] = None,
    data_dir: DataDirOpt = None,
    verbose: bool = False,
) -> None:
    """Continue an interrupted sweep; finished trials are not rerun."""
    from sweep import launcher

    launcher.setup_logging(verbose)
    storage, name = split_dir(directory)
    outcome = launcher.run(
        None,
        storage,
        name,
        resume=True,
        address=address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        num_cpus=num_cpus,
        data_dir=str(data_dir) if data_dir else None,
        announce=functools.partial(announce, name),
    )
    finish(outcome)


def split_dir(directory: str) -> tuple[str, str]:
    if "://" in directory:
        head, _, name = directory.rstrip("/").rpartition("/")
        return head, name
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{directory} is not a directory; pass a sweep directory")
    return str(path.parent), path.name


def finish(outcome) -> None:
    """Print the summary and counts; the exit code says how the sweep ended."""
    from analysis.load import load_sweeps
    from analysis.report import summary_text

    if "://" not in outcome.path:  # the analysis reads local directories only
        typer.echo(summary_text(load_sweeps([outcome.path])))
    typer.echo(
        f"{outcome.n_finished}/{outcome.n_trials} trials finished, "
        f"{outcome.n_errors} failed, in {outcome.wall_s:.0f} s"
    )
    for line in outcome.errors:
        typer.echo(f"failed: {line}", err=True)
    typer.echo(f"results: {outcome.path}")
    if outcome.interrupted:
        # 128 + the signal, as a shell reports a command a signal stopped
        name = signal.Signals(outcome.interrupted).name
        typer.echo(
            f"interrupted ({name}) with {outcome.n_unfinished} trial(s) left; "
            f"`sweep resume {outcome.path}` continues them",
            err=True,
        )
        raise typer.Exit(128 + outcome.interrupted)
    if outcome.n_errors:
        typer.echo(
            f"{outcome.n_errors} trial(s) failed; fix the cause and run "
            f"`sweep resume {outcome.path}`",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
@user_errors
def status(directory: Annotated[Path, typer.Argument(help="A sweep directory.")]):
    """Count finished, running, stopped, failed and pending trials of a sweep.

    Running trials have a live driver; stopped ones were cut short with theirs
    (Ctrl-C, a crash) and continue with `sweep resume`.
    """
    from analysis.load import load_sweeps
    from sweep.driver import live_driver

    results = load_sweeps([directory])
    counts = (
        results.trials["status"].value_counts().to_dict() if len(results.trials) else {}
    )
    planned = results.planned or len(results.trials)
    started = sum(n for s, n in counts.items() if s != "pending")
    counts["pending"] = max(0, planned - started)
    shown = ("finished", "running", "stopped", "error", "pending")
    typer.echo(
        f"{directory}: {planned} trials planned; "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)
    )
    for warning in results.warnings:
        typer.echo(f"warning: {warning}", err=True)
    unfinished = planned - counts.get("finished", 0)
    if unfinished and live_driver(directory) is None:
        typer.echo(
            f"no driver is running it: `sweep resume {directory}` continues the "
            f"{unfinished} unfinished trial(s)",
            err=True,
        )


@app.command()
@user_errors
def summary(directory: Annotated[list[Path], typer.Argument(help="Sweep dirs.")]):
    """Print the figure's tables for one or more sweeps."""
    from analysis.load import load_sweeps
    from analysis.report import summary_text

    typer.echo(summary_text(load_sweeps(directory)))


@app.command()
@user_errors
def report(
    directory: Annotated[list[Path], typer.Argument(help="Sweep dirs.")],
    out: Annotated[Path | None, typer.Option(help="Output directory.")] = None,
) -> None:
    """Write a self-contained HTML report with the figure's tables and plots."""
    from analysis.report import write_report

    out = out or Path(directory[0]) / "report"
    page = write_report(directory, out)
    typer.echo(f"report: {page}")


@app.command()
@user_errors
def trial(
    figure: Annotated[str, typer.Argument(help="A figure of `sweep list`.")],
    profile: Annotated[Profile, typer.Option()] = "smoke",
    index: Annotated[int, typer.Option(min=0, help="Which cell of the grid.")] = 0,
    set_: SetOpt = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Trial directory.")] = Path("trial-out"),
    data_dir: DataDirOpt = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 1,
) -> None:
    """Run one cell in this process, without Ray, for debugging.

    An --out that holds this cell's unfinished run continues it; one that holds
    its final record is not run again (its summary is printed).
    """
    from sweep.driver import hold
    from sweep.trial import LocalSink, run_trial

    _, plan = make_plan(figure, profile.value, set_, None)
    if index >= len(plan.trials):
        raise ConfigError(f"--index {index} but the sweep has {len(plan.trials)} cells")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory for the trial")
    cfg = TrialConfig.from_dict(plan.trials[index])
    import torch

    torch.set_num_threads(threads)  # as a Ray trial with that many CPUs
    sink = LocalSink(out, cfg)
    with hold(str(out.resolve())):  # readers see it running, a second one waits
        final = run_trial(cfg, sink, str(data_dir) if data_dir else None)
    typer.echo(json.dumps(final, indent=1, default=str))
    typer.echo(f"trial: {out}")


@app.command("validate-cluster")
@user_errors
def validate_cluster(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)] = Path(
        "cluster.yaml"
    ),
) -> None:
    """Check a Ray cluster-launcher config with Ray's own validation."""
    from sweep.cluster import validate

    validate(path)
    typer.echo(f"{path}: valid Ray cluster config")


def main() -> None:
    app(prog_name="sweep")


if __name__ == "__main__":
    sys.exit(main())
