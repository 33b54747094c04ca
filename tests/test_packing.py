"""Packed trials on real MNIST digits: each member trains as it would alone."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from sweep import metrics as m
from sweep.config import TrialConfig
from sweep.models import build_model
from sweep.packing import (
    PackedFC,
    PackedTrainer,
    PackingError,
    check_packable,
    initial_model,
    pack_groups,
    packs_exactly,
    run_packed,
)
from sweep.packing.files import MEASUREMENTS_FILE, PackFiles
from sweep.training import Trainer, load_state, make_optimizer
from sweep.trial import STATE_FILE, LocalSink, load_inputs, run_trial

# 4 real digits at 7x7 (d = 49), FC 2 x 32 SELU: a trial reaches MSE 1e-4 in
# 80-300 epochs (measured), a few milliseconds each, so a pack of 3-4 is fast
BASE = TrialConfig(
    n_train=4,
    image_size=7,
    width=32,
    depth=2,
    lr=1e-3,
    max_epochs=400,
    target_mse=1e-4,
    report_every=50,
    checkpoint_every=100,
    n_test_starts=8,
    n_noise_starts=8,
    iter_max_steps=200,
    gallery_size=4,
)
# Packed members must equal their trials alone bit for bit, at one thread:
# on one thread a batched matmul sums each output in the order a single one
# does, and each member's weights are tensors of their own in the optimizer,
# so its kernels split and round them as they do alone. (With two threads a
# matmul's blocking changes its sums in the last bit, packed or not: the same
# net alone on 1 and on 2 threads differs by 2e-7 after 30 Adam steps.)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # nets this small gain nothing from a second thread, and on a shared 2-core
    # box two spinning OpenMP threads can make a step 20x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def members(cfgs):
    """Each config's data and initial model, drawn as run_trial draws them."""
    models, data = [], []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        train, _, shape = load_inputs(cfg)
        models.append(initial_model(cfg, shape))
        data.append(train)
    return models, data, shape


def alone(cfg, model, x, epochs=10**6) -> Trainer:
    model = copy.deepcopy(model)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    trainer = Trainer(
        model,
        optimizer,
        x,
        x,
        target_mse=cfg.target_mse,
        max_epochs=cfg.max_epochs,
        check_every=cfg.check_every,
    )
    trainer.run(epochs)
    return trainer


def packed_trainer(cfgs, models, data, shape) -> PackedTrainer:
    packed = PackedFC.from_models(models, shape, width=32, depth=2, nonlinearity="selu")
    x = torch.stack(data)  # (K, n, d)
    return PackedTrainer(
        packed,
        cfgs[0].optimizer,
        [c.lr for c in cfgs],
        x,
        x,
        target_mse=[c.target_mse for c in cfgs],
        max_epochs=cfgs[0].max_epochs,
    )


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(
        a.state_dict().items(), b.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("width", [32, 48, 256])
def test_packed_forward_and_gradients_are_each_net_alone(width):
    # row k of the pack is net k: on one thread, at the catalog's widths, the
    # same outputs and MSE gradients to the last bit on its own data, and it
    # unpacks into the very module build_model makes
    cfgs = [BASE.replace(seed=s, width=width) for s in range(3)]
    models, data, shape = members(cfgs)
    packed = PackedFC.from_models(
        models, shape, width=width, depth=2, nonlinearity="selu"
    )
    x = torch.stack(data)  # (3, 4, 49)
    out = packed(x)
    grads = torch.autograd.grad(
        (out - x).pow(2).mean(dim=(1, 2)).sum(), list(packed.params)
    )
    for k, (model, xk) in enumerate(zip(models, data, strict=True)):
        alone_out = model(xk)
        assert torch.equal(out[k].detach(), alone_out.detach())
        alone_grads = torch.autograd.grad(
            torch.nn.functional.mse_loss(alone_out, xk), list(model.parameters())
        )
        assert all(
            torch.equal(g[k], a) for g, a in zip(grads, alone_grads, strict=True)
        )
    like = build_model("fc", shape, width=width, depth=2, nonlinearity="selu")
    unpacked = packed.unpack(1).state_dict()
    assert list(unpacked) == list(like.state_dict())
    assert all(torch.equal(unpacked[k], v) for k, v in models[1].state_dict().items())


@pytest.mark.parametrize("width", [32, 100])
def test_packs_exactly_tells_whether_a_pack_trains_as_its_nets_alone(width):
    # width 32 (a multiple of 16, like every width of the catalog) packs bit for
    # bit on this CPU build; width 100 did not when measured (~1e-7 a step).
    # Whatever this machine's kernels do, the probe must agree with 20 epochs
    # of real training: equal weights exactly when it says so
    cfgs = [BASE.replace(seed=s, width=width, max_epochs=20) for s in range(2)]
    models, data, shape = members(cfgs)
    packed = PackedFC.from_models(
        models, shape, width=width, depth=2, nonlinearity="selu"
    )
    x = torch.stack(data)
    pack = PackedTrainer(packed, "adam", [1e-3, 1e-3], x, x, max_epochs=20)
    pack.run(20)
    same = all(
        torch.equal(p, q)
        for k, (cfg, model, xk) in enumerate(zip(cfgs, models, data, strict=True))
        for p, q in zip(
            pack.model(k).state_dict().values(),
            alone(cfg, model, xk, epochs=20).model.state_dict().values(),
            strict=True,
        )
    )
    net = dict(width=width, depth=2, nonlinearity="selu")
    assert packs_exactly(shape, 4, sizes=(1, 2), **net) == same
    if width == 32:
        assert same  # the shapes the sweeps use


@pytest.mark.parametrize("optimizer", ["adam", "nesterov", "rmsprop"])
def test_packed_training_matches_each_trial_alone(optimizer):
    # four trials, three learning rates (1e-3 twice, so one optimizer holds two
    # rows), stopping at different epochs: each member must stop at the epoch
    # its trial alone stops at, for the same reason, with the same weights.
    # Per-member optimizers are PyTorch's own, so any of OPTIMIZERS packs.
    lrs = {"adam": (1e-3, 2e-3, 1e-3, 5e-4), "nesterov": (0.2, 0.3, 0.2, 0.1)}
    lrs["rmsprop"] = (2e-4, 4e-4, 2e-4, 1e-4)
    cfgs = [
        BASE.replace(seed=s, optimizer=optimizer, lr=lr)
        for s, lr in enumerate(lrs[optimizer])
    ]
    models, data, shape = members(cfgs)
    pack = packed_trainer(cfgs, models, data, shape)
    while not pack.done:
        pack.run(100)
    solo = [alone(c, m, x) for c, m, x in zip(cfgs, models, data, strict=True)]
    assert len({t.epoch for t in solo}) > 1  # members really retire at different times
    for k, trainer in enumerate(solo):
        member = pack.members[k]
        assert (member.epoch, member.stop_reason) == (
            trainer.epoch,
            trainer.stop_reason,
        )
        assert member.mse == trainer.mse
        assert_same_weights(pack.model(k), trainer.model)


def test_packed_state_resumes_alone_and_packed():
    # a member's state is a Trainer state: 30 packed epochs then 30 alone (or 30
    # in a fresh pack loaded from the states) equal 60 epochs alone; lr 1e-4 keeps
    # every member training past epoch 60
    cfgs = [BASE.replace(seed=s, lr=1e-4) for s in range(2)]
    models, data, shape = members(cfgs)
    first = packed_trainer(cfgs, models, data, shape)
    first.run(30)
    states = [first.state_dict(k) for k in range(2)]
    again = packed_trainer(cfgs, models, data, shape)
    again.load_state_dicts(states)
    again.run(30)
    for k, (cfg, model, x) in enumerate(zip(cfgs, models, data, strict=True)):
        straight = alone(cfg, model, x, epochs=60)
        resumed = alone(cfg, model, x, epochs=0)
        resumed.load_state_dict(states[k])
        resumed.run(30)
        assert straight.epoch == resumed.epoch == again.members[k].epoch == 60
        assert_same_weights(resumed.model, straight.model)
        assert_same_weights(again.model(k), straight.model)


def test_run_packed_writes_what_run_trial_writes(tmp_path):
    # the end-to-end claim: three cells (two learning rates, one a sequence
    # encoder with L = 2) run packed give each sink the progress rows, stop,
    # attractor counts and final weights that run_trial gives it alone
    cfgs = [
        BASE.replace(seed=0),
        BASE.replace(seed=1, lr=2e-3),
        BASE.replace(seed=2, seq_len=2),
    ]
    solo = [run_trial(c, LocalSink(tmp_path / f"a{k}", c)) for k, c in enumerate(cfgs)]
    sinks = [LocalSink(tmp_path / f"p{k}", c) for k, c in enumerate(cfgs)]
    packed = run_packed(cfgs, sinks)
    counts = ("epochs", "stop_reason", "n_fixed_points", "n_attractors", "n_stored")
    counts += ("n_stable_cycles", "n_spurious", "test_train", "noise_train")
    for k, (a, p) in enumerate(zip(solo, packed, strict=True)):
        assert {c: a[c] for c in counts} == {c: p[c] for c in counts}
        rows = [
            [json.loads(ln) for ln in (tmp_path / f"{w}{k}" / "result.json").open()]
            for w in "ap"
        ]
        assert [r["epochs"] for r in rows[0]] == [r["epochs"] for r in rows[1]]
        ckpt = [r.get("checkpoint_dir_name") for r in rows[0]]
        assert ckpt == [r.get("checkpoint_dir_name") for r in rows[1]]
        weights = [
            load_state(tmp_path / f"{w}{k}" / ckpt[-1] / STATE_FILE)["model"]
            for w in "ap"
        ]
        for name, value in weights[0].items():
            assert torch.equal(weights[1][name], value), name
    assert solo[0]["stop_reason"] == "converged"  # the comparison is not vacuous
    # a finished pack is not trained again: each sink's stored record comes back
    n_rows = [
        len((tmp_path / f"p{k}" / "result.json").read_text().split()) for k in range(3)
    ]
    again = run_packed(cfgs, sinks)
    assert [f["epochs"] for f in again] == [f["epochs"] for f in packed]
    assert n_rows == [
        len((tmp_path / f"p{k}" / "result.json").read_text().split()) for k in range(3)
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 64}, r"configs differ in width \(32, 64\); pack only"),
        ({"optimizer": "gd"}, r"configs differ in optimizer \('adam', 'gd'\)"),
        ({"n_train": 6}, r"configs differ in n_train"),
        ({"max_epochs": 500}, r"configs differ in max_epochs"),
    ],
)
def test_unpackable_configs_raise(change, message):
    with pytest.raises(PackingError, match=message):
        check_packable([BASE, BASE.replace(**change)])


def test_conv_models_and_wrong_shapes_are_refused():
    conv = BASE.replace(model="conv", dataset="cifar10", image_size=32)
    with pytest.raises(PackingError, match="model=conv cannot be packed"):
        check_packable([conv, conv])
    narrow = build_model("fc", (1, 7, 7), width=16, depth=2, nonlinearity="selu")
    with pytest.raises(PackingError, match=r"model 0 is not build_model\('fc'"):
        PackedFC.from_models(
            [narrow], (1, 7, 7), width=32, depth=2, nonlinearity="selu"
        )


def test_pack_groups_split_a_grid_into_packable_runs():
    # cells differing only in seed, init or lr pack together (0, 1, 3, 5, 6);
    # a wider net (2, 4) packs only with its like; a conv net (7) packs with
    # nothing; packs keep the cells' order and hold at most max_k cells
    conv = BASE.replace(model="conv", dataset="cifar10", image_size=32)
    cells = [
        BASE,
        BASE.replace(seed=1),
        BASE.replace(width=64),
        BASE.replace(init="uniform", init_scale=0.05),
        BASE.replace(width=64, seed=1),
        BASE.replace(lr=2e-3),
        BASE.replace(seed=2, lr=5e-4),
        conv,
    ]
    assert pack_groups(cells, 8) == [[0, 1, 3, 5, 6], [2, 4], [7]]
    assert pack_groups(cells, 2) == [[0, 1], [3, 5], [6], [2, 4], [7]]
    for group in pack_groups(cells, 8)[:2]:
        check_packable([cells[i] for i in group])  # raises if it were wrong


class Killed(Exception):
    """Stands for the trial's process dying at a report."""


class Store:
    """What Tune does with a packed trial's reports: each directory it is handed
    is copied whole to checkpoint_<n>; `kill_at` makes the n-th report fail."""

    def __init__(self, root, files: PackFiles, kill_at: int | None = None):
        self.root, self.files, self.kill_at = root, files, kill_at
        self.rows: list[dict] = []

    def flush(self) -> None:
        if self.kill_at is not None and len(self.rows) == self.kill_at:
            raise Killed
        metrics, directory = self.files.flush()
        if directory is not None:
            n = len(list(self.root.glob("checkpoint_*")))
            shutil.copytree(directory, self.root / f"checkpoint_{n:06d}")
        self.rows.append(metrics)

    def newest(self):
        return sorted(self.root.glob("checkpoint_*"))[-1]


def final_record(files: PackFiles, cell: int) -> dict:
    """What a cell's training and measurements found, less their wall times."""
    doc = json.loads((files.dir(cell) / MEASUREMENTS_FILE).read_text())
    doc["training"].pop("train_s")
    return {k: doc[k] for k in ("training", "examples", "cycles", "spurious")}


def test_a_killed_pack_resumes_each_cell_where_it_was(tmp_path):
    # cell 0 converges early (target 1e-3) and stops training at an epoch the
    # others' later checkpoints are not at; cells 1 and 2 train to the cap.
    # Killed at the report of cell 0's final record, the pack's newest
    # checkpoint holds cell 0's last training state and 1, 2 at a later epoch:
    # the resumed pack trains them as two packs, and every cell ends with the
    # record of the pack that was never killed
    cfgs = [
        BASE.replace(seed=0, target_mse=1e-3, max_epochs=600, checkpoint_every=50),
        BASE.replace(seed=1, target_mse=1e-30, max_epochs=600, checkpoint_every=50),
        BASE.replace(seed=2, target_mse=1e-30, max_epochs=600, checkpoint_every=50),
    ]
    cells = [3, 5, 8]  # their indices in a sweep

    whole = PackFiles(tmp_path / "whole", cells)
    store = Store(tmp_path / "whole-store", whole)
    run_packed(cfgs, [whole.cell(c) for c in cells], flush=store.flush)
    epochs = [whole.summary(c)["epochs"] for c in cells]
    assert epochs[0] < 400 and epochs[1:] == [600, 600]  # cell 0 stops early
    assert store.rows[-1][m.FINAL] and store.rows[-1][m.CELLS_DONE] == 3
    assert not any(r.get(m.FINAL) for r in store.rows[:-1])

    # a cell is measured as soon as it stops: cell 0's record comes early
    done = [r[m.CELLS_DONE] for r in store.rows]
    assert done.index(1) < len(done) - 2

    # kill at the report of cell 0's final record
    first = PackFiles(tmp_path / "first", cells)
    killed = Store(tmp_path / "store", first, kill_at=done.index(1))
    with pytest.raises(Killed):
        run_packed(cfgs, [first.cell(c) for c in cells], flush=killed.flush)
    newest = killed.newest()
    stored = [load_state(newest / f"cell_{c:05d}" / STATE_FILE) for c in cells]
    assert stored[0]["epoch"] < stored[1]["epoch"] == stored[2]["epoch"] < 600
    assert all(s["stop_reason"] is None for s in stored)

    again = PackFiles(tmp_path / "again", cells)
    again.load(newest)
    resumed = Store(tmp_path / "store", again)
    run_packed(cfgs, [again.cell(c) for c in cells], flush=resumed.flush)
    for c in cells:
        assert final_record(again, c) == final_record(whole, c)


def test_a_finished_cell_is_never_trained_or_measured_again(tmp_path):
    # two cells; the stored checkpoint holds cell 1's final record: resuming
    # trains and measures only cell 0, and cell 1's files stay byte for byte
    cfgs = [BASE.replace(seed=0), BASE.replace(seed=1)]
    whole = PackFiles(tmp_path / "whole", [0, 1])
    run_packed(cfgs, [whole.cell(c) for c in (0, 1)])
    measured = (whole.dir(1) / MEASUREMENTS_FILE).read_bytes()

    part = tmp_path / "part"
    shutil.copytree(whole.dir(1), part / "cell_00001")
    again = PackFiles(tmp_path / "again", [0, 1])
    again.load(part)
    store = Store(tmp_path / "store", again)
    finals = run_packed(cfgs, [again.cell(c) for c in (0, 1)], flush=store.flush)
    assert (again.dir(1) / MEASUREMENTS_FILE).read_bytes() == measured
    assert [r[m.CELLS_DONE] for r in store.rows][-1] == 2
    # only cell 0 reported progress: cell 1's progress metrics are its final ones
    assert {r["cell_00001/epochs"] for r in store.rows} == {finals[1]["epochs"]}
    assert finals[0]["epochs"] == whole.summary(0)["epochs"]


def test_pack_metrics_follow_the_slowest_cell_still_training(tmp_path):
    files = PackFiles(tmp_path, [0, 1, 2])
    files.report(0, {m.EPOCHS: 500, m.MSE: 1e-3, m.TRAIN_S: 2.0}, None)
    files.report(1, {m.EPOCHS: 500, m.MSE: 4e-5, m.TRAIN_S: 2.0}, None)
    metrics, directory = files.flush()
    assert directory is None  # nothing to checkpoint: no files changed
    assert metrics[m.MSE] == 1e-3 and metrics[m.LOG10_MSE] == pytest.approx(-3)
    assert (metrics[m.CELLS_DONE], metrics[m.N_CELLS]) == (0, 3)
    assert metrics["cell_00001/mse"] == 4e-5 and "cell_00002/mse" not in metrics
    assert m.FINAL not in metrics
