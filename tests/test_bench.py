"""The benchmark suite runs end to end at smoke size and prints every row.

No timing is asserted (the box is shared and noisy); what is asserted are the
things a benchmark must get right to mean anything: both versions computed the
same answer, and the FLOP and byte counts behind the limit are the hand counts.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from sweep.bench.__main__ import app


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(app, ["--smoke", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def test_smoke_run_prints_one_row_per_comparison(smoke):
    output, document = smoke
    # train: one row per thread setting of ours (1 and the default); iterate,
    # spectra: one each; pack: K=2 against 2 trainers, and bmm against vmap.
    # The Ray sweep is left out of smoke and quick runs (it starts Ray).
    threads = 1 if torch.get_num_threads() == 1 else 2
    expected = ["train"] * threads + ["iterate", "spectra", "pack", "pack-fwd-bwd"]
    assert [r["bench"] for r in document["rows"]] == expected
    assert document["mode"] == "smoke"
    table = [ln for ln in output.splitlines() if ln.split(" ")[0] in expected]
    assert [ln.split(" ")[0] for ln in table] == expected
    assert "speedup" in output and "median over interleaved rounds" in output
    for row in document["rows"]:
        # both versions ran: positive, finite times and a finite ratio
        for key in ("ours_s", "plain_s", "speedup"):
            assert 0 < row[key] < math.inf, (row["bench"], key)


def test_both_versions_compute_the_same_answer(smoke):
    _, document = smoke
    rows = {r["bench"]: r["values"] for r in document["rows"]}
    # dense eigenvalues and ARPACK see the same float64 Jacobian: the radii
    # agree to round-off, far inside the 1e-4 the benchmark promises
    assert rows["spectra"]["relative_difference"] <= 1e-4
    # the same map and the same stopping rule, one start or 4096 at a time: only
    # GEMM-vs-GEMV summation order differs, moving endpoints by round-off
    assert rows["iterate"]["max_end_difference"] <= 1e-4
    assert rows["iterate"]["same_steps"] >= rows["iterate"]["n_plain"] // 2


def test_limit_counts_are_the_hand_counts(smoke):
    _, document = smoke
    values = next(r["values"] for r in document["rows"] if r["bench"] == "train")
    # fc 2 x 32 on d = 49 (MNIST 7x7), n = 10: layers 49x32, 32x32, 32x49;
    # forward 2 n sum(d_in d_out) = 83,200 FLOP, backward twice that
    assert values["step_flops"] == 3 * 2 * 10 * (49 * 32 + 32 * 32 + 32 * 49)
    # Adam: value, gradient and two moments, read and written, 4 bytes each,
    # for 49*32+32 + 32*32+32 + 32*49+49 = 4,273 parameters
    assert values["adam_bytes"] == 4 * 2 * 4 * 4273


def test_unknown_benchmark_is_a_one_line_error():
    result = CliRunner().invoke(app, ["--smoke", "--only", "trian"])
    assert result.exit_code == 2
    assert "trian" in result.output
