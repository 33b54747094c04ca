"""The command line without Ray: help, planning, and one-line user errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sweep import catalog
from sweep.cli import app, parse_sets

runner = CliRunner()
COMMANDS = [
    "list",
    "run",
    "resume",
    "status",
    "summary",
    "report",
    "trial",
    "validate-cluster",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_sweep_runs_the_same_app():
    out = subprocess.run(
        [sys.executable, "-m", "sweep", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


def test_list_shows_every_figure_with_trial_counts():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    # the quick fig3 grid is 4 optimizers x 4 nonlinearities x 1 seed = 16 cells
    line = next(
        ln for ln in result.output.splitlines() if ln.split()[:2] == ["fig3", "quick"]
    )
    assert line.split()[2] == "16"
    for figure in catalog.FIGURES:
        assert figure in result.output
    assert "fig11" in result.output  # derived figures say where they come from


def test_set_parses_fixed_values_and_grid_axes():
    fixed, axes = parse_sets(["width=512", "lr=1e-3", "depth=1,2,3", "grey=true"])
    assert fixed == {"width": 512, "lr": 1e-3, "grey": True}
    assert axes == {"depth": [1, 2, 3]}


def test_overrides_multiply_the_grid():
    sweep = catalog.get_sweep("fig3", "smoke").with_overrides({}, {"seed": [0, 1, 2]})
    # smoke fig3: 1 optimizer x 2 nonlinearities, now x 3 seeds
    assert sweep.n_trials == 6
    assert len(sweep.trials()) == 6
    assert sorted({t["seed"] for t in sweep.trials()}) == [0, 1, 2]


def test_fixed_override_beats_a_linked_axis():
    # the optimizer axis links optimizer and lr; fixing lr must win in every cell
    sweep = catalog.get_sweep("fig3", "quick").with_overrides({"lr": 0.5}, {})
    assert {t["lr"] for t in sweep.trials()} == {0.5}


def test_every_catalog_sweep_builds_valid_cells():
    for figure in catalog.FIGURES:
        for profile in catalog.PROFILES:
            sweep = catalog.get_sweep(figure, profile)
            cells = sweep.trials()
            assert len(cells) == sweep.n_trials
            assert all(c["figure"] == figure or figure == "fig1b" for c in cells)


USER_ERRORS = [
    (["run", "fig99"], "unknown figure 'fig99'"),
    (["run", "fig3", "--profile", "huge"], "huge"),
    (["run", "fig3", "--set", "widht=3"], "unknown config field 'widht'"),
    (["run", "fig3", "--set", "width=abc"], "width='abc' is not a valid int"),
    (["run", "fig3", "--set", "width=0"], "width=0 must be >= 1"),
    (["run", "fig3", "--set", "lr=-1"], "lr=-1.0 must be > 0"),
    (["run", "fig3", "--set", "lr=nan"], "must be a finite number"),
    (["run", "fig3", "--set", "optimizer=sgdd"], "unknown optimizer 'sgdd'"),
    (["run", "fig3", "--set", "nonlinearity=selu2"], "selu2"),
    (["run", "fig3", "--set", "seq_len=3"], "seq_len=3 does not divide n_train=10"),
    (["run", "fig3", "--set", "width"], "is not field=value"),
    (
        ["run", "fig3", "--set", "width=100000", "--set", "depth=50"],
        "GiB to train but this machine has",
    ),
    (["run", "fig11"], "drawn from the trials of fig3"),
    # 25e-1 = 2.5 is not a whole number of units: refused, not cut to 2
    (["run", "fig3", "--set", "width=25e-1"], "width='25e-1' is not a valid int"),
    (["run", "fig3", "--set", "subset_seed=-3"], "subset_seed=-3 must be >= 0"),
    # a repeated seed would be averaged with itself as a second seed
    (["run", "fig3", "--set", "seed=0,0"], "axis seed repeats a value"),
    (["run", "fig3", "--pack", "0"], "Invalid value for '--pack'"),
    # one 8192-wide net (10 GiB) fits a machine like ours; 18 of them packed not
    (
        ["run", "fig4", "--profile", "paper", "--set", "width=8192", "--pack", "18"],
        "to train in a pack of 18 but this machine has",
    ),
    # a name with path parts would write outside --storage
    (["run", "fig3", "--name", "../escape"], "must be a plain directory name"),
    (["trial", "fig3", "--index", "99"], "--index 99 but the sweep has 2 cells"),
]


@pytest.mark.parametrize("args,message", USER_ERRORS)
def test_user_errors_are_one_line_and_exit_nonzero(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    text = result.output.strip()
    assert message in text, text
    assert "Traceback" not in text
    if result.exit_code == 2 and text.startswith("error:"):
        assert len(text.splitlines()) == 1, text


def test_storage_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("precious")
    result = runner.invoke(
        app, ["run", "fig3", "--profile", "smoke", "--storage", str(blocker)]
    )
    assert result.exit_code == 2
    assert "is a file, not a directory" in result.output
    assert blocker.read_text() == "precious"  # nothing overwritten


def test_resume_of_a_directory_that_is_not_a_sweep(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = runner.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a sweep directory" in result.output
    assert (tmp_path / "notes.txt").read_text() == "hello"


def test_resume_of_a_sweep_from_an_incompatible_version(tmp_path):
    (tmp_path / "sweep.json").write_text('{"schema": 999, "trials": []}')
    result = runner.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "incompatible version" in result.output


def test_cut_short_manifest_is_named(tmp_path):
    (tmp_path / "sweep.json").write_text('{"schema": 1, "tri')
    result = runner.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "cut short or corrupt" in result.output


def test_validate_cluster_accepts_the_shipped_config():
    result = runner.invoke(app, ["validate-cluster", "cluster.yaml"])
    assert result.exit_code == 0, result.output
    assert "valid Ray cluster config" in result.output


def test_nonlinearity_spellings_become_one_name():
    from sweep.config import TrialConfig

    # "SELU" and "x+sin(10x)/5" are the same functions as "selu", "sin10_fifth"
    assert TrialConfig(nonlinearity="SELU").nonlinearity == "selu"
    assert TrialConfig(nonlinearity="x + sin(10x)/5").nonlinearity == "sin10_fifth"


def test_trial_refuses_a_directory_holding_something_else(tmp_path):
    (tmp_path / "sweep.json").write_text("{}")  # e.g. a sweep's root directory
    result = runner.invoke(app, ["trial", "fig3", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not empty and holds no trial" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]


def test_fixing_a_linked_field_keeps_its_partner():
    # quick fig3 pairs gd with lr 0.5; fixing optimizer=gd must keep that rate
    sweep = catalog.get_sweep("fig3", "quick").with_overrides({"optimizer": "gd"}, {})
    assert {(t["optimizer"], t["lr"]) for t in sweep.trials()} == {("gd", 0.5)}
    # an explicit lr still wins
    sweep = catalog.get_sweep("fig3", "quick").with_overrides(
        {"optimizer": "gd", "lr": 0.1}, {}
    )
    assert {t["lr"] for t in sweep.trials()} == {0.1}


def test_trials_side_by_side_must_fit_in_memory_together(tmp_path):
    # a width whose one trial needs 55-80% of what a sweep may use: one fits,
    # two side by side (2 CPUs, 1 a trial) do not; one at a time is not refused
    # for memory (refused here for another reason: the storage is a file)
    from sweep.memory import FRACTION, physical_bytes
    from sweep.models import estimate_bytes

    budget = FRACTION * physical_bytes()
    width = 16
    while estimate_bytes("fc", (1, 7, 7), width=width, depth=2, n_train=4) < (
        0.55 * budget
    ):
        width += 16
    need = estimate_bytes("fc", (1, 7, 7), width=width, depth=2, n_train=4)
    assert need < 0.8 * budget  # the step of 16 does not jump past one trial's fit
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["run", "fig3", "--profile", "smoke", "--set", f"width={width}"]
    args += ["--set", "nonlinearity=selu", "--set", "seed=0,1", "--num-cpus", "2"]
    args += ["--storage", str(blocker)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "2 trials side by side need about" in result.output
    one = runner.invoke(app, [*args, "--max-concurrent", "1"])
    assert one.exit_code == 2 and "is a file, not a directory" in one.output
