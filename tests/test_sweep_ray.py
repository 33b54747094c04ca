"""Sweeps end to end through a real local Ray runtime on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_cli import sweep_cli

from analysis.load import load_sweeps
from sweep.metrics import OUTCOMES

ROOT = Path(__file__).resolve().parents[1]


def final_rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in rows if r.get("final")]


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if (p / "params.json").exists())


def test_smoke_sweep_from_the_cli(tmp_path):
    """fig3 smoke: 1 optimizer x 2 nonlinearities on real MNIST digits."""
    out = sweep_cli(
        "run",
        "fig3",
        "--profile",
        "smoke",
        "--storage",
        str(tmp_path),
        "--num-cpus",
        "2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "fig3-smoke"
    assert f"results: {exp}" in out.stdout

    results = load_sweeps([exp])
    trials = results.trials
    # one row per cell of the grid, each finished
    assert len(trials) == 2
    assert sorted(trials["nonlinearity"]) == ["leaky_relu", "selu"]
    assert set(trials["status"]) == {"finished"}
    for _, row in trials.iterrows():
        # smoke trains 4 digits to MSE 1e-4 within 300 epochs or stops at the cap
        assert row["stop_reason"] in ("converged", "cap")
        assert row["converged"] == (row["mse"] <= 1e-4)
        # counts are bounded by what exists: 4 examples, 8 starts per kind
        assert 0 <= row["n_attractors"] <= 4
        n_test = sum(row[f"test_{o}"] for o in OUTCOMES)
        assert n_test == 8  # every start ends as exactly one outcome
    assert len(results.examples) == 2 * 4

    manifest = json.loads((exp / "sweep.json").read_text())
    assert manifest["n_trials"] == 2
    assert manifest["versions"]["torch"].startswith("2.13")
    assert set(manifest["data"]) == {"mnist"}


def listening_sockets(pids: set[int]) -> list[str]:
    """Local addresses of TCP sockets in LISTEN state owned by `pids` (via ss)."""
    out = subprocess.run(
        ["ss", "-tlnpH"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            found.append(line.split()[3])
    return found


def peer_addresses(pids: set[int]) -> list[str]:
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established"], capture_output=True, text=True
    ).stdout
    return [
        line.split()[3]
        for line in out.splitlines()
        if any(f"pid={pid}," in line for pid in pids)
    ]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def test_local_ray_listens_and_talks_on_loopback_only():
    import ray

    from sweep.launcher import connect

    connect(None, 1, 0, None)
    try:
        time.sleep(2)  # let every Ray daemon open its ports
        pids = descendants(os.getpid()) | {os.getpid()}
        sockets = listening_sockets(pids)
        peers = peer_addresses(pids)
        node_ip = ray.util.get_node_ip_address()
    finally:
        ray.shutdown()
    assert sockets, "found no Ray listening sockets to check"
    loopback = ("127.", "[::1]", "[::ffff:127.")  # IPv4 loopback, also v4-mapped
    wide = [s for s in sockets if not s.startswith(loopback)]
    assert not wide, f"Ray listens beyond loopback: {wide}"
    far = [p for p in peers if not p.startswith(loopback)]
    assert not far, f"Ray talks to non-loopback addresses: {far}"
    assert node_ip == "127.0.0.1"


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    """SIGINT the driver after the first trial finishes; resume finishes the rest."""
    args = [
        sys.executable,
        "-m",
        "sweep",
        "run",
        "fig3",
        "--profile",
        "smoke",
        "--storage",
        str(tmp_path),
        "--num-cpus",
        "1",
        "--max-concurrent",
        "1",
        # train to the cap so each trial takes a few seconds
        "--set",
        "seed=0,1,2",
        "--set",
        "target_mse=1e-30",
        "--set",
        "max_epochs=4000",
    ]
    driver = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    exp = tmp_path / "fig3-smoke"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if exp.exists() and any(final_rows(d) for d in trial_dirs(exp)):
                break
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("no trial finished within 240 s")
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()

    finished = {
        d.name: (d / "result.json").read_bytes()
        for d in trial_dirs(exp)
        if final_rows(d)
    }
    # the interrupt must have left work undone, or this test proves nothing
    assert 1 <= len(finished) < 6

    out = sweep_cli("resume", str(exp), "--num-cpus", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    dirs = trial_dirs(exp)
    assert len(dirs) == 6  # 2 nonlinearities x 3 seeds, no duplicates
    assert all(len(final_rows(d)) == 1 for d in dirs)
    for name, before in finished.items():
        # a finished trial was not run again: its results are byte-identical
        assert (exp / name / "result.json").read_bytes() == before


SMOKE_SEEDS = ["fig3", "--profile", "smoke", "--num-cpus", "2", "--set", "seed=0,1,2"]
# what a cell found, less wall times (which differ from run to run)
RECORD = ["nonlinearity", "seed", "epochs", "mse", "stop_reason", "converged"]
RECORD += ["n_fixed_points", "n_attractors", "n_spurious", "max_radius"]
RECORD += [f"{k}_{o}" for k in ("test", "noise") for o in OUTCOMES]


def test_packed_sweep_gives_each_cell_what_it_gets_alone(tmp_path):
    """--pack 4 on 2 nonlinearities x 3 seeds: 2 trials of 3 cells each, every
    cell ending with the record it gets as a trial of its own."""
    storage = ["--storage", str(tmp_path)]
    packed = sweep_cli("run", *SMOKE_SEEDS, *storage, "--name", "packed", "--pack", "4")
    assert packed.returncode == 0, packed.stderr[-3000:]
    alone = sweep_cli("run", *SMOKE_SEEDS, *storage, "--name", "alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "6/6 trials finished, 0 failed" in packed.stdout

    # cells pack by shape: the seeds of one nonlinearity train together
    manifest = json.loads((tmp_path / "packed" / "sweep.json").read_text())
    assert (manifest["pack"], manifest["packs"]) == (4, [[0, 1, 2], [3, 4, 5]])
    assert len(trial_dirs(tmp_path / "packed")) == 2

    tables = [load_sweeps([tmp_path / name]) for name in ("packed", "alone")]
    by_cell = [t.trials.sort_values(["nonlinearity", "seed"]) for t in tables]
    assert set(by_cell[0]["status"]) == {"finished"} and len(by_cell[0]) == 6
    assert by_cell[0]["pack"].nunique() == 2
    # equal to the last bit: each trial runs on one thread (1 CPU), where a
    # packed member trains exactly as alone (see tests/test_packing.py)
    assert by_cell[0][RECORD].to_dict("records") == by_cell[1][RECORD].to_dict(
        "records"
    )
    assert len(tables[0].examples) == len(tables[1].examples) == 6 * 4
    assert by_cell[0]["converged"].all()  # the comparison is not of six NAs

    status = sweep_cli("status", str(tmp_path / "packed"))
    counts = "6 finished, 0 running, 0 stopped, 0 error, 0 pending"
    assert f"6 trials planned; {counts}" in status.stdout

    # the sweep continues as it started: another --pack is refused
    again = sweep_cli("run", *SMOKE_SEEDS, *storage, "--name", "packed", "--pack", "2")
    assert again.returncode == 2
    assert "was started with --pack 4, not 2" in again.stderr


def pack_rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_interrupted_pack_resumes_without_redoing_its_finished_cells(tmp_path):
    """One pack of 4: two cells converge in tens of epochs, two train to a 20000
    epoch cap. SIGINT once the first two are stored; resume finishes the other
    two, and the first two's records are left exactly as they were."""
    args = ["run", "fig3", "--profile", "smoke", "--storage", str(tmp_path)]
    args += ["--num-cpus", "1", "--pack", "4", "--set", "nonlinearity=selu"]
    args += ["--set", "seed=0,1", "--set", "target_mse=1e-3,1e-30"]
    args += ["--set", "max_epochs=20000"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    exp = tmp_path / "fig3-smoke"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            rows = (
                [r for d in trial_dirs(exp) for r in pack_rows(d)]
                if exp.exists()
                else []
            )
            if any(r.get("cells_done", 0) >= 2 for r in rows):
                break
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("no cell of the pack finished within 240 s")
        # one driver a sweep: a second run of it is refused while this one lives
        second = sweep_cli(*args)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is being run by process {driver.pid}" in second.stderr
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()

    # its driver gone, the pack's unfinished cells read as stopped
    status = sweep_cli("status", str(exp))
    assert "2 finished, 0 running, 2 stopped, 0 error, 0 pending" in status.stdout
    assert "continues the 2 unfinished trial(s)" in status.stderr

    (pack,) = trial_dirs(exp)
    before = load_sweeps([exp]).trials.set_index("trial_id")
    done = before.index[before["status"] == "finished"]
    # the interrupt must have left work undone, or this test proves nothing
    assert len(done) == 2 and (before.loc[done, "target_mse"] == 1e-3).all()
    stored = {
        t: Path(before.loc[t, "gallery"]).with_name("measurements.json") for t in done
    }
    stored = {t: p.read_bytes() for t, p in stored.items()}

    out = sweep_cli("resume", str(exp), "--num-cpus", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4/4 trials finished" in out.stdout
    after = load_sweeps([exp]).trials.set_index("trial_id")
    assert set(after["status"]) == {"finished"}
    assert (after.loc[after["target_mse"] == 1e-30, "epochs"] == 20000).all()
    for t, document in stored.items():
        # not measured again: the newest checkpoint holds the same bytes
        newest = Path(after.loc[t, "gallery"]).with_name("measurements.json")
        assert newest.read_bytes() == document
