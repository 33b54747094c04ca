"""One trial in-process on real MNIST: train, measure, write, resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sweep import spectra
from sweep.config import TrialConfig
from sweep.metrics import OUTCOMES
from sweep.trial import (
    MEASUREMENTS_FILE,
    LocalSink,
    load_inputs,
    run_trial,
    sequence_targets,
)

# 10 real digits at 14x14 (d = 196), FC 3 x 256 SELU, Adam: interpolates in
# a few hundred epochs on one core (measured: ~200 epochs, under a second)
AUTOENCODER = TrialConfig(
    n_train=10,
    image_size=14,
    width=256,
    depth=3,
    lr=1e-3,
    max_epochs=3_000,
    report_every=100,
    checkpoint_every=100,
    n_test_starts=50,
    n_noise_starts=50,
    gallery_size=4,
)


def read_final(trial_dir):
    rows = [
        json.loads(ln)
        for ln in (trial_dir / "result.json").read_text().split("\n")
        if ln
    ]
    final = [r for r in rows if r.get("final")]
    assert len(final) == 1
    ck = trial_dir / final[0]["checkpoint_dir_name"]
    return final[0], json.loads((ck / MEASUREMENTS_FILE).read_text())


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    torch.set_num_threads(1)
    final = run_trial(AUTOENCODER, LocalSink(out, AUTOENCODER))
    return out, final


def test_autoencoder_on_real_digits_interpolates_and_is_measured(autoencoder_run):
    out, final = autoencoder_run
    row, record = read_final(out)
    print(
        f"\n{final['n_attractors']} of 10 real MNIST digits are attractors "
        f"(MSE {final['mse']:.2e} after {final['epochs']} epochs); "
        f"test starts reaching a training digit: {final['test_train']}/50, "
        f"noise: {final['noise_train']}/50"
    )
    assert final["stop_reason"] == "converged"
    assert final["mse"] <= 1e-8
    # MSE 1e-8 is an RMS error of 1e-4 per pixel, far inside the 1e-3 relative
    # fixed-point tolerance: every training digit must be a fixed point
    assert final["n_fixed_points"] == 10
    # an attractor is a fixed point with spectral radius < 1, by definition
    radii = np.array([e["spectral_radius"] for e in record["examples"]])
    assert final["n_attractors"] == int((radii < 1).sum())
    assert [e["stored"] for e in record["examples"]] == list(radii < 1)
    # every start ends in exactly one outcome
    for kind in ("test", "noise"):
        counts = [final[f"{kind}_{o}"] for o in OUTCOMES]
        assert sum(counts) == 50
        # an autoencoder has no stored cycles of length > 1
        assert final[f"{kind}_cycle"] == 0
    # iteration can only be attracted to a training digit that is an attractor
    hits = np.array([e["hits_test"] + e["hits_noise"] for e in record["examples"]])
    assert (hits[radii >= 1.0 + 1e-6] == 0).all()
    assert row == {k: v for k, v in row.items()}  # result row is plain JSON


def test_dense_and_matrix_free_radius_agree_on_the_trained_network(autoencoder_run):
    out, _ = autoencoder_run
    from sweep.models import build_model
    from sweep.training import load_state

    model = build_model("fc", (1, 14, 14), width=256, depth=3, nonlinearity="selu")
    model.load_state_dict(load_state(out / "checkpoint_000000" / "state.pt")["model"])
    f64 = copy.deepcopy(model).double().eval()
    train, _, _ = load_inputs(AUTOENCODER)
    for x in train[:3].double():
        dense = spectra.spectral_radius(f64, x, method="dense")
        free = spectra.spectral_radius(f64, x, method="matfree")
        assert abs(dense - free) <= 1e-4 * dense


class Crash(Exception):
    pass


class CrashingSink(LocalSink):
    """Dies right after the first checkpoint reaches disk, as a killed worker."""

    def report(self, metrics, checkpoint):
        super().report(metrics, checkpoint)
        if checkpoint is not None:
            raise Crash


def test_resumed_trial_ends_with_the_same_measurements(autoencoder_run, tmp_path):
    """Crash after the first checkpoint, resume from disk: the same trial result."""
    _, final = autoencoder_run
    with pytest.raises(Crash):
        run_trial(AUTOENCODER, CrashingSink(tmp_path, AUTOENCODER))
    assert (tmp_path / "checkpoint_000000").exists()
    again = run_trial(AUTOENCODER, LocalSink(tmp_path, AUTOENCODER))
    assert again["epochs"] == final["epochs"]
    assert again["mse"] == final["mse"]  # bit-identical training on CPU
    for key in ("n_attractors", "test_train", "noise_train", "n_spurious"):
        assert again[key] == final[key]


def test_sequence_targets_send_each_example_to_the_next_of_its_cycle():
    x = torch.arange(6.0).reshape(6, 1)
    # two cycles of length 3: 0 -> 1 -> 2 -> 0 and 3 -> 4 -> 5 -> 3
    assert sequence_targets(x, 3).flatten().tolist() == [1, 2, 0, 4, 5, 3]


def test_sequence_encoder_on_real_digits_stores_its_cycles(tmp_path):
    cfg = AUTOENCODER.replace(
        n_train=6,
        seq_len=3,
        depth=5,
        n_test_starts=0,
        n_noise_starts=20,
        max_epochs=5_000,
    )
    torch.set_num_threads(1)
    final = run_trial(cfg, LocalSink(tmp_path, cfg))
    _, record = read_final(tmp_path)
    print(
        f"\nstable cycles: {final['n_stable_cycles']} of 2; noise starts on a stored "
        f"cycle: {final['noise_cycle']}/20"
    )
    assert final["converged"]
    # interpolation means f walks both cycles: every step within tolerance
    assert all(c["maps"] for c in record["cycles"])
    assert final["n_cycles"] == 2 and final["n_fixed_points"] == 6
    # stability is the product of the three Jacobians along each cycle
    for c in record["cycles"]:
        assert c["stable"] == (c["spectral_radius"] < 1)
    assert final["n_stored"] == 3 * final["n_stable_cycles"]
    # starts can only be captured by a stable stored cycle
    assert all(c["hits_noise"] == 0 for c in record["cycles"] if not c["stable"])
