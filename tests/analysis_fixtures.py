"""Small but complete fake sweep directories with numbers known by hand.

They follow the on-disk contract of `sweep/trial.py` (params.json, result.json
lines, checkpoints with measurements.json and gallery.npz, Ray's error.txt),
so `analysis/` can be tested while the trial code is still being written.
Images are real: MNIST digits and Steamboat Willie frames from SWEEP_DATA_DIR.

Every finished trial of a `Spec` with `stored = a` cycles stored has, per
training example i (in cycle c = i // L):
  stored and spectral radius 0.5 when c < a, else radius 2.0;
  hits_test 1 when c < a, hits_noise 1 when c < a // 2 (L = 1 only);
and its 10 test and 10 noise starts end as
  test:  train a, spurious_fixed 1, unsettled 9 - a
  noise: train a // 2, spurious_fixed 2, diverged 1, unsettled 7 - a // 2
(for L > 1 the `train` counts go to `cycle` instead), with two spurious
attractors: #0 stable (hit by 1 test and 1 noise start), #1 unstable (1 noise).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep.config import TrialConfig
from sweep.driver import process_started
from sweep.metrics import OUTCOMES

N_STARTS = 10  # per start kind
SIDE = 14  # MNIST resized to 14x14 by 2x2 mean pooling
MOVIE_SIDE = 32  # movie frames pooled 4x4
GALLERY_STEPS = [0, 1, 2, 5, 10, 20, 50, 100]
EXPERIMENT = "a1b2c"  # Ray's 5-hex experiment prefix of each trial id
STABLE_RADIUS, UNSTABLE_RADIUS = 0.5, 2.0


@dataclass
class Spec:
    """One trial: its config overrides, how it ended and what it stored."""

    config: dict
    status: str = "finished"  # finished | running | error | pending
    stored: int = 0  # stable stored cycles (L = 1: attractors)
    converged: bool = True
    extra: dict = field(default_factory=dict)


def data_dir() -> Path:
    return Path(os.environ["SWEEP_DATA_DIR"])


def mnist(n: int, split: str = "train") -> np.ndarray:
    """(n, 1, 14, 14) real MNIST digits in [0, 1]."""
    x = np.load(data_dir() / "mnist_subset.npz")[f"x_{split}"][:n] / 255.0
    return x.reshape(n, 1, SIDE, 2, SIDE, 2).mean(axis=(3, 5))


def movie(n: int) -> np.ndarray:
    """(n, 1, 32, 32) the first n real Steamboat Willie frames in [0, 1]."""
    x = np.load(data_dir() / "steamboat_willie_frames.npz")["frames"][:n] / 255.0
    return x.reshape(n, 1, MOVIE_SIDE, 4, MOVIE_SIDE, 4).mean(axis=(3, 5))


def fig3_specs() -> list[Spec]:
    """2 optimizers x 2 nonlinearities x 3 seeds; see test_analysis for the sums."""
    stored = {
        ("adam", "selu"): [(6, True), (8, True), (7, True)],
        ("adam", "relu"): [(4, True), (2, True), "running"],
        ("gd", "selu"): [(5, True), (9, False), "error"],
        ("gd", "relu"): [(0, False), (1, False), (0, False)],
    }
    specs = []
    for (optimizer, nonlinearity), seeds in stored.items():
        for seed, outcome in enumerate(seeds):
            cfg = dict(optimizer=optimizer, nonlinearity=nonlinearity, seed=seed)
            if isinstance(outcome, str):
                specs.append(Spec(cfg, status=outcome))
            else:
                specs.append(Spec(cfg, stored=outcome[0], converged=outcome[1]))
    return specs


def base_config(**overrides) -> dict:
    cfg = dict(
        figure="fig3", dataset="mnist", n_train=10, image_size=SIDE, width=32,
        depth=3, n_test_starts=N_STARTS, n_noise_starts=N_STARTS, gallery_size=4,
    )  # fmt: skip
    return TrialConfig(**{**cfg, **overrides}).to_dict()


def write_sweep(
    root: Path,
    name: str,
    specs: list[Spec],
    figure: str = "fig3",
    planned: int | None = None,
    wrap_cell: bool = True,
) -> Path:
    """A Ray Tune experiment directory with our sweep.json and one dir per spec."""
    sweep = Path(root) / name
    sweep.mkdir(parents=True)
    configs = [base_config(figure=figure, **s.config) for s in specs]
    meta = {
        "schema": 1, "figure": figure, "profile": "quick",
        "created": "2025-01-01T00:00:00", "n_trials": planned or len(specs),
        "notes": {}, "trials": configs, "git": "0000000", "versions": {}, "data": {},
    }  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps(meta))
    if any(s.status == "running" for s in specs):
        # a live driver (this test process), so its trials still run
        driver = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": process_started(os.getpid()), "since": "now"}  # fmt: skip
        (sweep / "driver.json").write_text(json.dumps(driver))

    # Ray's own files: a pickle we must never open, and a state JSON
    (sweep / "tuner.pkl").write_bytes(b"not a pickle: analysis must not open it")
    (sweep / "experiment_state-2025-01-01_00-00-00.json").write_text("{}")
    for i, (spec, cfg) in enumerate(zip(specs, configs, strict=True)):
        tag = ",".join(f"{k}={v}" for k, v in sorted(spec.config.items()))
        trial = sweep / f"train_cell_{EXPERIMENT}_{i:05d}_{i}_{tag}"
        write_trial(trial, spec, cfg, f"{EXPERIMENT}_{i:05d}", wrap_cell)
    return sweep


def write_trial(
    trial: Path, spec: Spec, cfg: dict, trial_id: str, wrap_cell: bool = True
) -> None:
    trial.mkdir(parents=True)
    params = {"cell": cfg} if wrap_cell else cfg
    (trial / "params.json").write_text(json.dumps(params))
    if spec.status == "pending":
        return

    # two progress reports, the first with a training-state checkpoint
    mse = 1e-9 * (cfg["seed"] + 1) if spec.converged else 3e-5
    ray_fields = dict(trial_id=trial_id, done=False, config={"cell": cfg})
    rows = [
        dict(epochs=500, mse=1e-3, log10_mse=-3.0, train_s=1.0, training_iteration=1,
             checkpoint_dir_name="checkpoint_000000", **ray_fields),
        dict(epochs=1000, mse=2e-6, log10_mse=np.log10(2e-6), train_s=2.0,
             training_iteration=2, **ray_fields),
    ]  # fmt: skip
    (trial / "checkpoint_000000").mkdir()
    (trial / "checkpoint_000000" / "state.pt").write_bytes(b"")
    lines = [json.dumps(r) for r in rows]

    if spec.status == "running":
        # Ray is still writing the next line
        lines.append('{"epochs": 1500, "mse": 1.5e-')
        (trial / "result.json").write_text("\n".join(lines))
        return
    if spec.status == "error":
        (trial / "result.json").write_text("\n".join(lines) + "\n")
        (trial / "error.txt").write_text(
            'Traceback (most recent call last):\n  File "trial.py", line 1\n'
            "RuntimeError: CUDA out of memory\n"
        )
        return

    # the final report and its checkpoint with every measurement
    doc, gallery = measurements(spec, cfg, mse)
    final = dict(
        epochs=2000, mse=mse, log10_mse=float(np.log10(mse)), train_s=4.0,
        training_iteration=3, checkpoint_dir_name="checkpoint_000001",
        **{**ray_fields, "done": True}, **doc["summary"],
    )  # fmt: skip
    lines.append(json.dumps(final))
    (trial / "result.json").write_text("\n".join(lines) + "\n")
    checkpoint = trial / "checkpoint_000001"
    checkpoint.mkdir()
    (checkpoint / "state.pt").write_bytes(b"")
    (checkpoint / "measurements.json").write_text(json.dumps(doc))
    np.savez_compressed(checkpoint / "gallery.npz", **gallery)


def measurements(spec: Spec, cfg: dict, mse: float) -> tuple[dict, dict]:
    """measurements.json and gallery arrays with the module docstring's numbers."""
    n, length, a = cfg["n_train"], cfg["seq_len"], spec.stored
    n_cycles = n // length
    examples = [
        dict(index=i, cycle=i // length, position=i % length, residual=1e-6,
             spectral_radius=STABLE_RADIUS if i // length < a else UNSTABLE_RADIUS,
             fixed_point=True, stored=i // length < a,
             hits_test=int(length == 1 and i < a),
             hits_noise=int(length == 1 and i < a // 2))
        for i in range(n)
    ]  # fmt: skip
    cycles = [
        dict(cycle=c, length=length, max_residual=1e-6,
             spectral_radius=STABLE_RADIUS if c < a else UNSTABLE_RADIUS,
             maps=True, stable=c < a, hits_test=int(length > 1 and c < a),
             hits_noise=int(length > 1 and c < a // 2))
        for c in range(n_cycles)
    ]  # fmt: skip
    reached = "train" if length == 1 else "cycle"
    starts = []
    for kind, counts in (
        ("test", {reached: a, "spurious_fixed": 1, "unsettled": 9 - a}),
        ("noise", {reached: a // 2, "spurious_fixed": 2, "diverged": 1,
                   "unsettled": 7 - a // 2}),
    ):  # fmt: skip
        zero = dict.fromkeys(OUTCOMES, 0)
        starts.append(
            dict(start_kind=kind, n=N_STARTS, **zero, mean_steps=50.0) | counts
        )
    spurious = [
        dict(attractor=0, period=1, spectral_radius=0.3, stable=True, hits_test=1,
             hits_noise=1),
        dict(attractor=1, period=1, spectral_radius=1.2, stable=False, hits_test=0,
             hits_noise=1),
    ]  # fmt: skip
    summary = dict(
        final=True, stop_reason="converged" if spec.converged else "cap",
        converged=spec.converged, measure_s=0.5, n_train=n, n_cycles=n_cycles,
        n_fixed_points=n, n_attractors=a if length == 1 else 0, n_stable_cycles=a,
        n_stored=a * length, max_radius=UNSTABLE_RADIUS if a < n_cycles else 0.5,
        median_radius=1.0, n_spurious=1, n_spurious_unstable=1,
    )  # fmt: skip
    for row in starts:
        for outcome in OUTCOMES:
            summary[f"{row['start_kind']}_{outcome}"] = row[outcome]
    summary.update(spec.extra)
    images = movie(n) if cfg["dataset"] == "movie" else mnist(n)
    doc = dict(
        schema=1, config=cfg, image_shape=list(images.shape[1:]),
        training=dict(epochs=2000, mse=mse, train_s=4.0,
                      stop_reason=summary["stop_reason"]),
        summary=summary, seq_len=length, examples=examples, cycles=cycles,
        starts=starts, spurious=spurious,
    )  # fmt: skip
    return doc, gallery(images, length, seed=cfg["seed"])


GALLERY_OUTCOMES = [  # (start kind, outcome, target)
    ("test", "train", 3),
    ("test", "spurious_fixed", 0),
    ("noise", "train", 7),
    ("noise", "diverged", -1),
]


def gallery(images: np.ndarray, length: int, seed: int) -> dict[str, np.ndarray]:
    """Iterates that contract geometrically (by half a step) onto their target."""
    n = len(images)
    train = images.reshape(n, -1)  # (n, d)
    rng = np.random.default_rng(seed)
    test = mnist(2, "test").reshape(2, -1) if length == 1 else train[:2] * 0.5
    noise = rng.normal(0.0, 1.0, size=(2, train.shape[1]))
    starts = np.concatenate([test, noise])  # (g, d)
    ends = []
    outcomes = [(k, "cycle" if o == "train" and length > 1 else o, t)
                for k, o, t in GALLERY_OUTCOMES]  # fmt: skip
    for (_, outcome, target), x0 in zip(outcomes, starts, strict=True):
        if outcome in ("train", "cycle"):
            ends.append(train[target % n])
        elif outcome == "diverged":
            ends.append(x0 * 1e3)
        else:
            ends.append(train.mean(axis=0))
    ends = np.stack(ends)
    decay = 0.5 ** np.asarray(GALLERY_STEPS, dtype=float)[None, :, None]  # (1, T, 1)
    iterates = ends[:, None] + (starts - ends)[:, None] * decay  # (g, T, d)
    out = dict(
        train=train.astype(np.float16),
        steps=np.asarray(GALLERY_STEPS + [1000]),
        iterates=np.concatenate([iterates, ends[:, None]], axis=1).astype(np.float16),
        start_kind=np.array([k for k, _, _ in outcomes]),
        outcome=np.array([o for _, o, _ in outcomes]),
        target=np.array(
            [t if length == 1 else t // length for _, _, t in outcomes], dtype=np.int64
        ),  # fmt: skip
        end_steps=np.array([30, 40, 35, 12], dtype=np.int64),
    )
    if length > 1:
        out["recall"] = recall(train, length, rng)
    return out


def recall(train: np.ndarray, length: int, rng) -> np.ndarray:
    """(1, 3L + 1, d): noise that turns into frame 0 after one step, then plays."""
    frames = [rng.uniform(0.0, 1.0, size=train.shape[1])]
    frames += [train[k % length] for k in range(3 * length)]
    return np.stack(frames)[None].astype(np.float16)
