"""Bad input: one line that names the problem, exit 2, nothing on disk touched.

Every case runs the real CLI in-process (Typer's CliRunner) against real data
files and a storage directory that already holds other people's results; the
storage and data directories are snapshot before and compared after. No case
may start Ray: each mistake must be caught up front, in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweep.cli import app

runner = CliRunner()
DATA = Path(os.environ["SWEEP_DATA_DIR"])  # tests/conftest.py points it at real data
MNIST = "mnist_subset.npz"
USER_ERROR = 2  # sweep.cli.user_errors: the exit code of every user mistake
FAST_S = 30.0  # every mistake is refused before Ray starts (~5 s measured)
NO_CLUSTER_S = 10.0  # the address preflight's 3 s timeout plus start-up
SMOKE = ["--profile", "smoke"]


# -- setups: each writes into tmp_path before the snapshot ----------------------


def truncated(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp / "data"
    data.mkdir()
    # the first megabyte of the real file: a download cut off half-way
    (data / MNIST).write_bytes((DATA / MNIST).read_bytes()[:1_000_000])


def altered(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp / "data"
    data.mkdir()
    raw = bytearray((DATA / MNIST).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte: same size, wrong SHA-256
    (data / MNIST).write_bytes(bytes(raw))


def no_data(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "data").mkdir()
    # nowhere to look and no network: the environment's data dir and the
    # per-user cache are emptied too, and downloads are forbidden
    monkeypatch.setenv("SWEEP_DATA_DIR", str(tmp / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    monkeypatch.setenv("SWEEP_NO_DOWNLOAD", "1")


def yaml_malformed(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "axes.yaml").write_text("width: [1, 2\nlr: :\n")


def yaml_list(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "axes.yaml").write_text("- width\n- 512\n")


def yaml_typo(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "axes.yaml").write_text("widht: 512\n")


@dataclass
class Case:
    """argv (with {storage}, {data}, {tmp} filled in), the message, a setup."""

    args: list[str]
    message: str
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None


CASES = {
    # data files: found through --data-dir, checked before any trial runs
    "truncated-data": Case(
        ["run", "fig3", *SMOKE, "--data-dir", "{data}"], "truncated", truncated
    ),
    "checksum-mismatch": Case(
        ["run", "fig3", *SMOKE, "--data-dir", "{data}"], "SHA-256", altered
    ),
    "no-data-anywhere": Case(
        ["run", "fig3", *SMOKE, "--data-dir", "{data}"], "no mnist data", no_data
    ),
    "too-few-images": Case(
        ["run", "fig3", *SMOKE, "--set", "n_train=100000"], "holds only"
    ),
    # config values
    "lr-nan": Case(["run", "fig3", *SMOKE, "--set", "lr=nan"], "finite number"),
    "lr-zero": Case(["run", "fig3", *SMOKE, "--set", "lr=0"], "lr=0.0 must be > 0"),
    "width-negative": Case(
        ["run", "fig3", *SMOKE, "--set", "width=-3"], "width=-3 must be >= 1"
    ),
    "width-zero": Case(
        ["run", "fig3", *SMOKE, "--set", "width=0"], "width=0 must be >= 1"
    ),
    "seed-overflows-int": Case(
        ["run", "fig3", *SMOKE, "--set", "seed=1e400"], "seed='1e400' is not a valid"
    ),
    "unknown-optimizer": Case(
        ["run", "fig3", *SMOKE, "--set", "optimizer=sgdd"], "unknown optimizer 'sgdd'"
    ),
    "memory-too-big": Case(
        ["run", "fig3", *SMOKE, "--set", "width=100000", "--set", "depth=50"],
        "GiB to train but this machine has",
    ),
    "seq-len-not-dividing": Case(
        ["run", "fig3", *SMOKE, "--set", "seq_len=3"],
        "seq_len=3 does not divide n_train=4",
    ),
    "cuda-without-gpus": Case(
        ["run", "fig3", *SMOKE, "--set", "device=cuda"], "--gpus-per-trial is 0"
    ),
    # config files
    "yaml-malformed": Case(
        ["run", "fig3", *SMOKE, "--config", "{tmp}/axes.yaml"],
        "not valid YAML at line 2",
        yaml_malformed,
    ),
    "yaml-not-a-mapping": Case(
        ["run", "fig3", *SMOKE, "--config", "{tmp}/axes.yaml"],
        "must hold a mapping",
        yaml_list,
    ),
    "yaml-unknown-field": Case(
        ["run", "fig3", *SMOKE, "--config", "{tmp}/axes.yaml"],
        "unknown config field 'widht'",
        yaml_typo,
    ),
    # storage and what it holds already
    "storage-is-a-file": Case(
        ["run", "fig3", *SMOKE, "--storage", "{storage}/notes.txt"],
        "is a file, not a directory",
    ),
    "storage-below-a-file": Case(
        ["run", "fig3", *SMOKE, "--storage", "{storage}/notes.txt/sub"],
        "is not writable",
    ),
    "name-of-another-search-space": Case(
        ["run", "fig3", *SMOKE, "--storage", "{storage}", "--name", "theirs"],
        "different search space",
    ),
    "name-of-a-non-sweep-folder": Case(
        ["run", "fig3", *SMOKE, "--storage", "{storage}", "--name", "photos"],
        "exists and is not a sweep",
    ),
    "run-into-cut-short-manifest": Case(
        ["run", "fig3", *SMOKE, "--storage", "{storage}", "--name", "cut"],
        "cut short or corrupt",
    ),
    "resume-not-a-sweep": Case(
        ["resume", "{storage}/photos"], "is not a sweep directory"
    ),
    "resume-incompatible-version": Case(
        ["resume", "{storage}/future"], "incompatible version"
    ),
    "resume-cut-short-manifest": Case(["resume", "{storage}/cut"], "cut short"),
    "resume-never-started": Case(
        ["resume", "{storage}/theirs"], "no Ray Tune state to resume"
    ),
    "resume-a-file": Case(["resume", "{storage}/notes.txt"], "is not a directory"),
    # clusters
    "address-with-nothing-listening": Case(
        ["run", "fig3", *SMOKE, "--address", "127.0.0.1:1"], "no Ray cluster at"
    ),
    "address-not-host-port": Case(
        ["run", "fig3", *SMOKE, "--address", "headnode"], "is not host:port"
    ),
    # the in-process trial command
    "trial-out-is-a-file": Case(
        ["trial", "fig3", "--out", "{storage}/notes.txt"], "is a file"
    ),
}


def precious_storage(storage: Path) -> None:
    """Results and files of others that no mistake may touch."""
    storage.mkdir()
    (storage / "notes.txt").write_text("precious")
    (storage / "photos").mkdir()
    (storage / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    # a sweep of another search space (one cell that is not smoke fig3's)
    theirs = storage / "theirs"
    theirs.mkdir()
    cell = {"figure": "fig3", "width": 7}
    manifest = {"schema": 1, "figure": "fig3", "n_trials": 1, "trials": [cell]}
    (theirs / "sweep.json").write_text(json.dumps(manifest))
    (theirs / "a1b2c_00000").mkdir()
    (theirs / "a1b2c_00000" / "result.json").write_text('{"mse": 0.1}\n')
    # one from a future version, one whose manifest was cut short
    (storage / "future").mkdir()
    (storage / "future" / "sweep.json").write_text('{"schema": 999, "trials": []}')
    (storage / "cut").mkdir()
    (storage / "cut" / "sweep.json").write_text('{"schema": 1, "tri')


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root: relative path -> SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, tmp_path, monkeypatch):
    # the world before: others' results, plus what the case needs
    storage = tmp_path / "storage"
    precious_storage(storage)
    if case.setup:
        case.setup(tmp_path, monkeypatch)
    fill = {"storage": str(storage), "data": str(tmp_path / "data"), "tmp": tmp_path}
    args = [a.format(**fill) for a in case.args]
    if args[0] == "run" and "--storage" not in args:
        args += ["--storage", str(storage)]
    before = snapshot(tmp_path)

    t0 = time.perf_counter()
    result = runner.invoke(app, args)
    elapsed = time.perf_counter() - t0

    # one line, naming the problem, and the user-error exit code
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == USER_ERROR, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and case.message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    # refused up front: no Ray start (a sweep start alone takes ~5 s), no hang
    limit = NO_CLUSTER_S if "--address" in args else FAST_S
    assert elapsed < limit, f"took {elapsed:.1f} s"
    # nothing that was there is changed or gone, and nothing was added
    assert snapshot(tmp_path) == before


# -- readers of a sweep whose files were cut short: warn, still work -----------


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """A real one-trial sweep directory: smoke fig3 cell 0, trained in-process."""
    from sweep import catalog
    from sweep.config import TrialConfig
    from sweep.launcher import Plan, write_manifest
    from sweep.trial import LocalSink, run_trial

    exp = tmp_path_factory.mktemp("storage") / "fig3-smoke"
    sweep = catalog.get_sweep("fig3", "smoke")
    cells = sweep.trials()[:1]
    write_manifest(str(exp), Plan("fig3", "smoke", cells, sweep.notes), None)
    cfg = TrialConfig.from_dict(cells[0])
    run_trial(cfg, LocalSink(exp / "a1b2c_00000", cfg))
    return exp


def cut_last_line(path: Path) -> None:
    text = path.read_text()
    last = text.rstrip("\n").rpartition("\n")[2]
    path.write_text(text[: len(text) - len(last) // 2 - 1])  # half its last line


@pytest.mark.parametrize("command", ["status", "summary"])
def test_a_cut_short_result_file_is_a_warning_not_an_error(
    finished_sweep, tmp_path, command
):
    exp = tmp_path / "fig3-smoke"
    shutil.copytree(finished_sweep, exp)
    cut_last_line(exp / "a1b2c_00000" / "result.json")

    result = runner.invoke(app, [command, str(exp)])
    assert result.exit_code == 0, result.output
    assert "cut-short last line of result.json" in result.output
    if command == "status":
        # the final record survives in measurements.json, so the trial still
        # counts as finished although its final report line was cut
        counts = "1 finished, 0 running, 0 stopped, 0 error, 0 pending"
        assert f"1 trials planned; {counts}" in result.output


def test_a_cut_short_manifest_is_a_warning_for_readers(finished_sweep, tmp_path):
    exp = tmp_path / "fig3-smoke"
    shutil.copytree(finished_sweep, exp)
    (exp / "sweep.json").write_text((exp / "sweep.json").read_text()[:40])

    result = runner.invoke(app, ["status", str(exp)])
    # the trial is still read; only the plan (how many trials) is unknown
    assert result.exit_code == 0, result.output
    assert "unreadable sweep.json" in result.output
    assert "1 finished" in result.output
