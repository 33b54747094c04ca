"""Full-batch training on real MNIST digits: convergence, stopping, resuming."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from sweep.data import images
from sweep.models import build_model
from sweep.training import (
    OPTIMIZERS,
    Trainer,
    TrainingError,
    load_state,
    make_optimizer,
    save_state,
)

TARGET_MSE = 1e-8  # the paper's interpolation threshold (PAPER.md, figs 3-9)
PIXEL_TOL = 1e-2  # max |f(x) - target| per pixel of an interpolating net
SHAPE = (1, 14, 14)  # MNIST resized to 14x14 keeps each test at a second or two


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """The first 10 real MNIST training digits at 14x14, flattened: (10, 196)."""
    return images("mnist", "train", 10, image_size=14).reshape(10, -1)


def small_net(seed: int = 0, nonlinearity: str = "selu") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("fc", SHAPE, width=256, depth=3, nonlinearity=nonlinearity)


def current_mse(trainer: Trainer) -> float:
    with torch.no_grad():
        return F.mse_loss(trainer.model(trainer.inputs), trainer.targets).item()


@pytest.mark.parametrize("task", ["autoencoder", "sequence"])
def test_small_fc_net_interpolates_real_digits(digits, task):
    # an overparameterized net (200k parameters, 10 examples) interpolates its data;
    # Adam at lr 1e-3 gets this one below 1e-8 in ~160 epochs (measured, seed 0).
    # The sequence encoder maps x_i to x_{i+1} and the last digit back to the first.
    targets = digits if task == "autoencoder" else digits.roll(-1, dims=0)
    net = small_net()
    trainer = Trainer(
        net,
        make_optimizer("adam", net.parameters(), lr=1e-3),
        digits,
        targets,
        target_mse=TARGET_MSE,
        max_epochs=3000,
    )
    mse = trainer.run(3000)
    assert trainer.stop_reason == "converged" and trainer.done
    assert mse <= TARGET_MSE
    # convergence is judged on the weights as they are left: the reported MSE is
    # that of the model now, and judged at a check (every 10 epochs)
    assert mse == pytest.approx(current_mse(trainer), rel=1e-6)
    assert trainer.epoch % trainer.check_every == 0 and 0 < trainer.epoch < 3000
    # every output is its target to within a fraction of a grey level (RMS error
    # 1e-4); for the sequence encoder that means f(x_9) is x_0, not x_9
    with torch.no_grad():
        out = net(digits)
    assert (out - targets).abs().max() < PIXEL_TOL
    if task == "sequence":
        assert (out[-1] - digits[0]).abs().max() < PIXEL_TOL
        assert (out[-1] - digits[-1]).abs().max() > 0.5
    summary = trainer.summary()
    assert (summary.epochs, summary.mse, summary.stop_reason) == (
        trainer.epoch,
        mse,
        "converged",
    )
    assert summary.train_s > 0


@pytest.mark.parametrize("optimizer", ["adam", "nesterov"])
def test_resumed_training_is_bit_identical(digits, tmp_path, optimizer):
    # 60 epochs straight vs 25, save to disk, a fresh (differently initialized)
    # model + optimizer + Trainer loaded from the file, 35 more: every update sees
    # the same weights and optimizer state, so the weights match bit for bit
    lr = {"adam": 1e-4, "nesterov": 1e-3}[optimizer]

    def trainer_for(seed: int) -> Trainer:
        net = small_net(seed)
        opt = make_optimizer(optimizer, net.parameters(), lr=lr)
        return Trainer(net, opt, digits, digits, max_epochs=1000)

    straight = trainer_for(0)
    straight.run(60)

    first = trainer_for(0)
    first.run(25)  # 25: not a multiple of check_every, the harder case
    save_state(first.state_dict(), tmp_path / "state.pt")
    resumed = trainer_for(1)
    resumed.load_state_dict(load_state(tmp_path / "state.pt"))
    resumed.run(35)

    assert resumed.epoch == straight.epoch == 60
    assert resumed.mse == straight.mse and resumed.stop_reason is None
    for a, b in zip(
        straight.model.parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    # the write was atomic: only the state file is left in the directory
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_same_seed_same_weights_other_seed_other_weights(digits):
    # training is deterministic on CPU: the seed alone fixes the trajectory
    def trained(seed: int) -> list[torch.Tensor]:
        net = small_net(seed)
        opt = make_optimizer("adam", net.parameters(), lr=1e-4)
        Trainer(net, opt, digits, digits).run(20)
        return list(net.parameters())

    assert all(map(torch.equal, trained(0), trained(0)))
    assert not all(map(torch.equal, trained(0), trained(1)))


def test_divergence_is_a_result_not_an_exception(digits):
    # gradient descent at lr 1e3 overshoots without bound; the loss turns inf/NaN
    net = small_net()
    opt = make_optimizer("gd", net.parameters(), lr=1e3)
    trainer = Trainer(net, opt, digits, digits, max_epochs=1000)
    mse = trainer.run(1000)
    assert trainer.stop_reason == "diverged"
    assert not math.isfinite(mse) and trainer.epoch < 1000


@pytest.mark.parametrize("max_epochs", [20, 25])
def test_cap_stops_at_exactly_max_epochs(digits, max_epochs):
    # lr 1e-6 cannot reach 1e-8 in 25 epochs; the cap must stop at max_epochs even
    # between loss checks (25 is not a multiple of check_every = 10), and a further
    # run must not train past it
    net = small_net()
    opt = make_optimizer("adam", net.parameters(), lr=1e-6)
    trainer = Trainer(net, opt, digits, digits, max_epochs=max_epochs)
    trainer.run(10)
    assert trainer.stop_reason is None and trainer.epoch == 10
    mse = trainer.run(1000)
    assert trainer.stop_reason == "cap" and trainer.epoch == max_epochs
    assert mse == current_mse(trainer) and mse > TARGET_MSE
    assert trainer.run(1000) == mse and trainer.epoch == max_epochs


def test_time_limit_stops_training(digits):
    # a 0.3 s budget runs out long before 10^6 epochs; the stop comes at the first
    # check after the limit, i.e. well within a second more
    net = small_net()
    opt = make_optimizer("adam", net.parameters(), lr=1e-6)
    trainer = Trainer(net, opt, digits, digits, max_epochs=10**6, time_limit_s=0.3)
    t0 = time.perf_counter()
    trainer.run(10**6)
    assert trainer.stop_reason == "time"
    assert 0.3 <= trainer.summary().train_s < time.perf_counter() - t0 + 1e-3
    assert trainer.summary().train_s < 2.0


# learning rates small enough that one step is a descent step for each method
ONE_STEP_LR = {
    "gd": 1e-2,
    "momentum": 1e-2,
    "nesterov": 1e-2,
    "adam": 1e-4,
    "adamw": 1e-4,
    "rmsprop": 1e-5,
    "adagrad": 1e-3,
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_takes_a_descent_step(digits, name):
    # a small enough step along (a rescaling of) the negative gradient lowers the
    # loss; check_every=1 reads the loss before and after one epoch
    net = small_net()
    opt = make_optimizer(name, net.parameters(), lr=ONE_STEP_LR[name])
    trainer = Trainer(net, opt, digits, digits, check_every=1)
    before = trainer.mse
    after = trainer.run(1)
    assert trainer.epoch == 1 and after < before


def test_optimizer_settings():
    # gd is plain gradient descent; momentum and nesterov carry the given momentum
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_optimizer("gd", params, 0.1).defaults["momentum"] == 0.0
    nesterov = make_optimizer("nesterov", params, 0.1, momentum=0.8).defaults
    assert nesterov["momentum"] == 0.8 and nesterov["nesterov"]
    assert not make_optimizer("momentum", params, 0.1).defaults["nesterov"]


@pytest.mark.parametrize(
    "name, lr, message",
    [
        ("sgd2", 0.1, r"unknown optimizer 'sgd2'; choose one of gd, momentum"),
        ("adam", 0.0, r"lr=0.0 for optimizer adam must be a number > 0"),
        ("gd", -1.0, r"lr=-1.0 for optimizer gd must be a number > 0"),
        ("adam", math.nan, r"lr=nan"),
    ],
)
def test_bad_optimizer_settings_raise(name, lr, message):
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(TrainingError, match=message):
        make_optimizer(name, params, lr)


def test_unreadable_state_files_raise_training_errors(tmp_path):
    # a missing or truncated checkpoint says which file and what to do
    with pytest.raises(TrainingError, match="no training state at"):
        load_state(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TrainingError, match="bad.pt is unreadable.*delete it"):
        load_state(bad)


def test_mismatched_data_raises(digits):
    net = small_net()
    opt = make_optimizer("adam", net.parameters(), lr=1e-3)
    with pytest.raises(TrainingError, match=r"must both be \(n, D\)"):
        Trainer(net, opt, digits, digits[:5])


# ~3 s on 2 cores (measured: 590-770 epochs, 1.8-2.9 s for seeds 0-2)
@pytest.mark.slow
def test_paper_net_interpolates_ten_digits_at_full_size():
    # PAPER.md's calibration: 11 x 256 SELU, Adam lr 1e-4, full batch, 10 MNIST
    # digits at 28x28 reach MSE 1.2e-12 within 1,000 epochs, so 1e-8 comes sooner
    x = images("mnist", "train", 10).reshape(10, -1)  # (10, 784)
    torch.manual_seed(0)
    net = build_model("fc", (1, 28, 28), width=256, depth=11, nonlinearity="selu")
    opt = make_optimizer("adam", net.parameters(), lr=1e-4)
    trainer = Trainer(net, opt, x, x, target_mse=TARGET_MSE, max_epochs=1000)
    trainer.run(1000)
    assert trainer.stop_reason == "converged" and trainer.mse <= TARGET_MSE
