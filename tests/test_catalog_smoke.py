"""Every figure's smoke profile runs its first cell end to end, in-process."""

from __future__ import annotations

import json

import pytest
import torch

from sweep import catalog
from sweep.config import TrialConfig
from sweep.metrics import OUTCOMES
from sweep.trial import MEASUREMENTS_FILE, LocalSink, run_trial


@pytest.mark.parametrize("figure", catalog.FIGURES)
def test_smoke_cell_of_each_figure(figure, tmp_path):
    torch.set_num_threads(1)
    sweep = catalog.get_sweep(figure, "smoke")
    cfg = TrialConfig.from_dict(sweep.trials()[0])
    final = run_trial(cfg, LocalSink(tmp_path, cfg))

    # a finished record, whatever training reached in a smoke budget
    assert final["final"] is True
    assert final["stop_reason"] in ("converged", "cap", "time")
    record = json.loads(
        next(tmp_path.glob(f"checkpoint_*/{MEASUREMENTS_FILE}")).read_text()
    )
    assert record["config"] == cfg.to_dict()
    assert len(record["examples"]) == cfg.n_train
    assert len(record["cycles"]) == cfg.n_train // cfg.seq_len
    # every start is accounted for in exactly one outcome
    for row in record["starts"]:
        assert sum(row[o] for o in OUTCOMES) == row["n"]
    n_test = 0 if cfg.dataset == "movie" else cfg.n_test_starts
    assert [r["n"] for r in record["starts"]] == [n_test, cfg.n_noise_starts]
