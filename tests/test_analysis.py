"""analysis/ on fake sweep directories whose numbers are known by hand.

The fixtures (tests/analysis_fixtures.py) follow the on-disk contract of
sweep/trial.py. The fig 3 sweep is 2 optimizers x 2 nonlinearities x 3 seeds,
each seed storing `a` of its 10 MNIST training examples as attractors:

    adam/selu  a = 6, 8, 7           all converged
    adam/relu  a = 4, 2, (running)   seed 2 still training, last line cut short
    gd/selu   a = 5, 9*, (error)    * did not reach target_mse
    gd/relu   a = 0*, 1*, 0*        no seed converged -> NA
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import analysis_fixtures as fx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import ResultsError, load_sweeps, plots, save_tables, tables
from analysis.report import figure_of, summary_text, write_report

SWEEP = "fig3_quick"
L_MOVIE = 12  # frames in the fixture's movie cycle


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Three sweeps: fig 3 as above, a movie sequence encoder, a width x depth grid."""
    root = tmp_path_factory.mktemp("sweeps")
    fx.write_sweep(root, SWEEP, fx.fig3_specs())
    movie = dict(dataset="movie", image_size=32, grey=True, n_train=L_MOVIE,
                 seq_len=L_MOVIE)  # fmt: skip
    fx.write_sweep(root, "fig1b", [fx.Spec(movie, stored=1)], figure="fig1b")
    grid = [
        fx.Spec(dict(width=w, depth=d), stored=s)
        for (w, d), s in {(16, 2): 3, (16, 3): 4, (32, 2): 5, (32, 3): 6}.items()
    ]
    fx.write_sweep(root, "grid", grid, figure="custom")
    return root


@pytest.fixture(scope="module")
def results(root):
    return load_sweeps(root / SWEEP)


def cell(frame: pd.DataFrame, **keys) -> pd.Series:
    """The one row of a table whose columns equal `keys`."""
    match = frame
    for k, v in keys.items():
        match = match[match[k] == v]
    assert len(match) == 1, keys
    return match.iloc[0]


# -- loading -----------------------------------------------------------------


def test_trials_table_has_status_config_and_metrics(results):
    """12 trial dirs: 10 wrote a final row, 1 has progress only, 1 has error.txt."""
    trials = results.trials
    assert len(trials) == 12
    assert trials["status"].value_counts().to_dict() == {
        "finished": 10, "running": 1, "error": 1,
    }  # fmt: skip
    # config fields are plain columns, metrics from the final row beside them
    row = cell(trials, optimizer="adam", nonlinearity="selu", seed=1)
    assert (row["n_attractors"], row["width"], row["status"]) == (8, 32, "finished")
    assert row["trial_id"] == "a1b2c_00001"  # Ray's id from the result rows
    # the errored trial keeps the exception line of Ray's traceback
    error = cell(trials, status="error")
    assert error["error"] == "RuntimeError: CUDA out of memory"
    assert math.isnan(error["n_attractors"])  # never measured: unknown, not 0


def test_running_trial_keeps_progress_and_warns_on_cut_short_line(results):
    """The running trial's last complete row says epoch 1000, MSE 2e-6."""
    running = cell(results.trials, status="running")
    assert (running["epochs"], running["mse"]) == (1000, 2e-6)
    assert pd.isna(running["converged"])
    assert any("cut-short last line" in w for w in results.warnings)


def test_malformed_middle_line_is_skipped(tmp_path):
    """A bad line in the middle is skipped; the final row after it still counts."""
    sweep = fx.write_sweep(tmp_path, "s", [fx.Spec({}, stored=3)])
    (result,) = sweep.glob("*/result.json")
    lines = result.read_text().splitlines()
    result.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    loaded = load_sweeps(sweep)
    assert loaded.trials["n_attractors"].tolist() == [3]
    assert any("line 2" in w for w in loaded.warnings)


def test_trial_dirs_with_checkpoints_only(tmp_path):
    """Ray 2.60 sweeps seen here synced checkpoints before params/result.json.

    The finished trial's measurements.json carries its config and final
    metrics; the running trial's config is sweep.json's cell at its grid index.
    """
    specs = [
        fx.Spec(dict(nonlinearity="relu", seed=0), stored=3),
        fx.Spec(dict(nonlinearity="selu", seed=1), status="running"),
    ]
    sweep = fx.write_sweep(tmp_path, "ckpt", specs)
    for path in [*sweep.glob("*/params.json"), *sweep.glob("*/result.json")]:
        path.unlink()
    trials = load_sweeps(sweep).trials
    assert trials[["status", "nonlinearity", "seed"]].values.tolist() == [
        ["finished", "relu", 0],
        ["running", "selu", 1],
    ]
    assert trials["n_attractors"].iloc[0] == 3 and bool(trials["converged"].iloc[0])


def test_local_trial_dir_with_flat_params(tmp_path):
    """`sweep trial` writes the config without Ray's {"cell": ...} wrapper."""
    trial = tmp_path / "local" / "trial_0"
    cfg = fx.base_config(nonlinearity="relu")
    fx.write_trial(trial, fx.Spec({}, stored=2), cfg, "local", wrap_cell=False)
    for path in (trial, trial.parent):  # the trial dir itself, or the dir above
        loaded = load_sweeps(path)
        assert loaded.trials[["nonlinearity", "n_attractors"]].values.tolist() == [
            ["relu", 2]
        ]
        assert len(loaded.examples) == 10  # its 10 training examples


def test_empty_sweep_is_a_warning_with_the_planned_count(tmp_path):
    sweep = tmp_path / "empty"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"schema": 1, "n_trials": 20}))
    loaded = load_sweeps(sweep)
    assert loaded.trials.empty and "n_attractors" in loaded.trials
    assert loaded.warnings == ["empty: no trial has started yet (20 planned)"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nowhere", "no such results directory"),
        (lambda p: (p / "junk").mkdir() or p / "junk", "is not a sweep directory"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    ],
)
def test_bad_paths_raise_one_line_errors(tmp_path, make, message):
    with pytest.raises(ResultsError) as err:
        load_sweeps(make(tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "pass" in str(err.value)  # says what to do instead


def test_storage_dir_loads_every_sweep_inside(root):
    """The storage dir holds three sweeps: 12 + 1 + 4 trials."""
    loaded = load_sweeps(root)
    assert sorted(loaded.sweeps["sweep"]) == ["fig1b", SWEEP, "grid"]
    assert len(loaded.trials) == 17


def test_child_tables(results):
    """10 finished trials x 10 examples; 2 start kinds and 2 spurious each."""
    assert len(results.examples) == 100 and len(results.cycles) == 100
    assert len(results.starts) == 20 and len(results.spurious) == 20
    # adam/selu seed 1 stores a = 8: examples 0-7 are attractors
    ex = results.examples[results.examples["trial_id"] == "a1b2c_00001"]
    assert ex["stored"].tolist() == [True] * 8 + [False] * 2
    assert (ex["optimizer"] == "adam").all()  # config carried into child rows
    # attractor #0 (stable) is hit by both kinds, #1 (unstable) by noise only
    starts = results.starts.set_index(["trial_id", "start_kind"])
    test, noise = starts.loc["a1b2c_00001", "test"], starts.loc["a1b2c_00001", "noise"]
    assert (test["distinct_spurious"], test["distinct_spurious_unstable"]) == (1, 0)
    assert (noise["distinct_spurious"], noise["distinct_spurious_unstable"]) == (1, 1)


def test_save_tables_round_trip(results, tmp_path):
    written = save_tables(results, tmp_path)
    assert len(written) == 12  # 6 tables x (Parquet, CSV)
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert trials["n_attractors"].sum() == results.trials["n_attractors"].sum()
    csv = pd.read_csv(tmp_path / "trials.csv")
    finished = csv[csv["status"] == "finished"]
    assert set(finished["image_shape"]) == {"1x14x14"}  # c x h x w as text
    assert len(pd.read_csv(tmp_path / "examples.csv")) == 100


# -- tables --------------------------------------------------------------------


def test_fig3_cells_worked_by_hand(results):
    """Means over converged seeds only; sample std (ddof 1)."""
    grid = tables.fig3(results.trials)
    # adam/selu: (6 + 8 + 7) / 3 = 7, squared deviations 1 + 1 + 0 -> std 1
    c = cell(grid, optimizer="adam", nonlinearity="selu")
    assert (c["mean"], c["std"], c["k"], c["n"]) == (7.0, 1.0, 3, 3)
    assert c["text"] == "7.0 ± 1.0 of 10 (3 seeds)"
    # adam/relu: seed 2 is running, so k = 2 of 3: mean 3, std sqrt(2)
    c = cell(grid, optimizer="adam", nonlinearity="relu")
    assert (c["mean"], c["k"]) == (3.0, 2) and c["std"] == pytest.approx(math.sqrt(2))
    assert c["text"] == "3.0 ± 1.4 of 10 (2 of 3 seeds)"
    # gd/selu: seed 1 (a = 9) never converged and seed 2 errored -> 5 alone
    c = cell(grid, optimizer="gd", nonlinearity="selu")
    assert (c["mean"], c["k"]) == (5.0, 1) and math.isnan(c["std"])
    # gd/relu: no converged seed -> NA, not 0
    c = cell(grid, optimizer="gd", nonlinearity="relu")
    assert math.isnan(c["mean"]) and c["k"] == 0
    assert c["text"] == "NA (0 of 3 seeds converged)"
    numbers = tables.wide(grid, "mean")
    assert numbers.loc["adam", "selu"] == 7.0 and np.isnan(numbers.loc["gd", "relu"])


def test_seed_spread_of_mse(results):
    """Converged adam MSEs are (1, 2, 3, 1, 2)e-9 (mse = 1e-9 (seed + 1)):
    mean 1.8e-9, squared deviations sum to 2.8e-18 over 4 -> std sqrt(0.7)e-9."""
    spread = tables.seed_spread(results.trials, "mse", ["optimizer"])
    adam = cell(spread, optimizer="adam")
    assert adam["mean"] == pytest.approx(1.8e-9)
    assert adam["std"] == pytest.approx(math.sqrt(0.7) * 1e-9)
    assert (adam["k"], adam["n"], adam["n_finished"]) == (5, 6, 5)
    # gd: of 5 finished runs only selu seed 0 converged, with mse 1e-9
    gd = cell(spread, optimizer="gd")
    assert (gd["mean"], gd["k"], gd["n_finished"]) == (1e-9, 1, 5)
    assert math.isnan(gd["std"])  # one seed has no spread


def test_outcomes_by_optimizer(results):
    """Converged adam runs have a = 6, 8, 7, 4, 2 (sum 27); gd only a = 5.

    Per run, test starts: train a, outside 1, nothing 9 - a;
    noise starts: train a // 2, outside 2, nothing 1 + 7 - a // 2.
    """
    table = tables.outcomes(results.starts, ["optimizer"])
    test = cell(table, optimizer="adam", start_kind="test")
    assert test[["n_trials", "n_starts", "train", "outside", "nothing"]].tolist() == [
        5, 50, 27, 5, 45 - 27,
    ]  # fmt: skip
    noise = cell(table, optimizer="adam", start_kind="noise")
    # a // 2 = 3, 4, 3, 2, 1 -> 13; nothing = 5 diverged + (35 - 13) unsettled
    assert noise[["train", "outside", "nothing", "distinct_spurious"]].tolist() == [
        13, 10, 27, 5,
    ]  # fmt: skip
    gd = cell(table, optimizer="gd", start_kind="test")
    assert gd[["n_trials", "train", "outside", "nothing"]].tolist() == [1, 5, 1, 4]


def test_hits_per_example(results):
    """Test starts hit example i once in every run with a > i."""
    table = tables.hits_per_example(results.examples, ["optimizer"])
    adam = table[table["optimizer"] == "adam"].set_index("index")
    # a = 6, 8, 7, 4, 2: example 0 in all 5 runs, example 5 in 3, example 8 in none
    assert adam["hits_test"].tolist() == [5, 5, 4, 4, 3, 3, 2, 1, 0, 0]
    # noise: a // 2 = 3, 4, 3, 2, 1 -> example 3 only in the a = 8 run
    assert adam.loc[3, "hits_noise"] == 1


def test_fig9_and_fig8_on_sequence_sweeps(tmp_path):
    """n = 10 split into cycles of L: stored = L x (stable cycles)."""
    specs = [
        fx.Spec(dict(seq_len=length, seed=seed), stored=s)
        for length, stable in ((1, (4, 6)), (5, (1, 2)))
        for seed, s in enumerate(stable)
    ]
    trials = load_sweeps(fx.write_sweep(tmp_path, "f9", specs, figure="fig9")).trials
    fig9 = tables.fig9(trials)
    # L = 1: 4 and 6 examples -> 5; L = 5: 1 and 2 cycles of 5 -> 5 and 10 -> 7.5
    assert cell(fig9, seq_len=1)["mean"] == 5.0
    long = cell(fig9, seq_len=5)
    assert long["mean"] == 7.5 and long["std"] == pytest.approx(math.sqrt(12.5))
    # fig 8 counts stable cycles out of n / L = 2
    fig8 = cell(tables.fig8(trials), seq_len=5)
    assert (fig8["mean"], fig8["out_of"]) == (1.5, 2)
    assert fig8["text"] == "1.5 ± 0.7 of 2 (2 seeds)"


def test_fig6_grid_and_inferred_figure(root):
    """The 'custom' grid sweep varies width and depth, so it is fig 6."""
    loaded = load_sweeps(root / "grid")
    assert set(figure_of(loaded)) == {"fig6"}
    numbers = tables.wide(tables.fig6(loaded.trials), "mean")
    assert numbers.loc[16, 2] == 3 and numbers.loc[32, 3] == 6


def test_grid_table_names_a_missing_column(results):
    with pytest.raises(KeyError, match="missing column.*not_a_column"):
        tables.grid_table(results.trials, ["optimizer"], [], "not_a_column")


# -- plots ---------------------------------------------------------------------


def not_blank(path: Path) -> bool:
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    return pixels.std() > 0


def first_gallery(results, **keys):
    row = cell(results.trials, **keys)
    return dict(np.load(row["gallery"])), row


def test_gallery_panels(results, tmp_path):
    """4 starts x (start, 3 iterates, end, reached) = 24 image panels."""
    arrays, row = first_gallery(results, trial_id="a1b2c_00000")
    fig = plots.gallery(arrays, row["image_shape"], n_iterates=3)
    assert len(fig.axes) == 24
    # the first start reached train #3; the second a spurious point: blank
    assert fig.axes[5].get_title() == "reached train #3"
    assert fig.axes[11].get_title() == "no training image"
    assert not_blank(plots.save(fig, tmp_path / "gallery.png"))


def test_movie_strip_and_gif(root, tmp_path):
    """The recall is 3L + 1 = 37 iterates; the GIF keeps every one."""
    loaded = load_sweeps(root / "fig1b")
    arrays, row = first_gallery(loaded, status="finished")
    recall = arrays["recall"]
    fig = plots.movie_strip(recall, row["image_shape"], n=10)
    assert len(fig.axes) == 10
    assert not_blank(plots.save(fig, tmp_path / "strip.png"))
    gif = plots.movie_gif(recall, row["image_shape"], tmp_path / "movie.gif")
    with Image.open(gif) as image:
        assert image.n_frames == 3 * L_MOVIE + 1
    # the sequence encoder's gallery shows the cycle element nearest the end
    fig = plots.gallery(arrays, row["image_shape"], seq_len=L_MOVIE)
    assert fig.axes[5].get_title() == "cycle 0, #3"


def test_radii_one_panel_per_converged_group(results, tmp_path):
    """gd/relu has no converged seed, so 3 of the 4 groups get a panel."""
    fig = plots.radii(results.examples, by=("optimizer", "nonlinearity"))
    assert len(fig.axes) == 3
    for ax in fig.axes:
        # the stability line y = 1 is drawn in every panel
        assert any(np.allclose(line.get_ydata(), 1.0) for line in ax.get_lines())
    assert not_blank(plots.save(fig, tmp_path / "radii.png"))


def test_hits_bars(results, tmp_path):
    """Per optimizer: one bar per example and kind, heights from the hits table."""
    fig = plots.hits(results.examples, by=("optimizer",))
    assert len(fig.axes) == 2
    heights = [p.get_height() for p in fig.axes[0].patches[:10]]  # adam, test
    assert heights == [5, 5, 4, 4, 3, 3, 2, 1, 0, 0]
    assert not_blank(plots.save(fig, tmp_path / "hits.png"))


def test_heatmap_shows_na_masked_and_hatched(results, tmp_path):
    fig = plots.heatmap(tables.fig3(results.trials))
    ax, _colorbar = fig.axes
    data = ax.get_images()[0].get_array()
    # rows adam, gd; columns relu, selu: only (gd, relu) is NA
    assert data.mask.tolist() == [[False, False], [True, False]]
    assert any(p.get_hatch() == "//" for p in ax.patches)
    assert "NA" in [t.get_text() for t in ax.texts]
    assert not_blank(plots.save(fig, tmp_path / "heatmap.png"))


# -- report --------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return write_report([root / SWEEP, root / "fig1b"], out)


def test_report_is_self_contained(report):
    page = report.read_text()
    pngs = sorted((report.parent / "figures").glob("*.png"))
    # every PNG written is embedded, and nothing is fetched from the network
    assert page.count("data:image/png;base64,") == len(pngs) > 0
    assert "data:image/gif;base64," in page
    assert "http://" not in page and "https://" not in page
    assert all(not_blank(p) for p in pngs)
    # fig 3's sweep shows its grid and figs 11 and 12; the movie its recall
    for section in ("fig3", "fig11", "fig12", "fig3_gallery", "fig1b_movie"):
        assert f"<section id='{section}'>" in page
    assert "fig6" not in page  # no sweep varies width or depth
    assert "7.0 ± 1.0 of 10 (3 seeds)" in page and "NA (0 of 3 seeds" in page
    assert (report.parent / "tables" / "trials.parquet").exists()
    assert (report.parent / "tables" / "fig3_cells.csv").exists()


def test_summary_text(results):
    text = summary_text(results)
    assert "7.0 ± 1.0 of 10 (3 seeds)" in text
    assert "1.00e-09" in text  # MSE in scientific notation
    assert "cut-short last line" in text  # warnings come first


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    shot = tmp_path / "report.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2000", report.as_uri(),
    ]  # fmt: skip
    subprocess.run([chromium, *flags], capture_output=True, timeout=60, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    # a rendered page has dark text on white: both extremes are present
    assert pixels.min() < 64 and pixels.max() > 200 and pixels.std() > 10


def test_analysis_never_imports_ray():
    """analysis/ reads files only; Ray's API changes often and is slow to import."""
    code = "import sys, analysis.report; print('ray' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_cell_never_pools_an_extra_axis_with_its_seeds(tmp_path):
    """fig3 with an added init_scale axis: adam/selu stores 6, 8 at scale 0.01
    and 2, 4 at 0.1. Pooled as seeds the cell would read 5.0 ± 2.6 (4 seeds);
    split, it reads 7.0 ± 1.4 and 3.0 ± 1.4 of 10 (2 seeds each)."""
    specs = [
        fx.Spec(
            dict(
                optimizer="adam",
                nonlinearity="selu",
                seed=seed,
                init="uniform",
                init_scale=scale,
            ),
            stored=a,
        )  # fmt: skip
        for scale, stored in ((0.01, (6, 8)), (0.1, (2, 4)))
        for seed, a in enumerate(stored)
    ]
    grid = tables.fig3(load_sweeps(fx.write_sweep(tmp_path, "extra", specs)).trials)
    assert grid.attrs["rows"] == ["init_scale", "optimizer"]
    assert list(grid["text"]) == [
        "7.0 ± 1.4 of 10 (2 seeds)",
        "3.0 ± 1.4 of 10 (2 seeds)",
    ]
    assert tables.wide(grid, "mean").loc[(0.1, "adam"), "selu"] == 3.0
