"""Full-batch training on MSE until the network interpolates its data.

The paper trains until the training MSE is at most 1e-8 (PAPER.md, figs 3-9): only a
map that (nearly) interpolates can have its training examples as fixed points. A
`Trainer` runs in resumable chunks, so a trial can report and checkpoint between them,
and a run resumed from a checkpoint follows the same trajectory bit for bit.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TrainingError(ValueError):
    """An optimizer, learning rate or training setting is unknown or out of range."""


OPTIMIZERS = ("gd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
STOP_REASONS = ("converged", "cap", "diverged", "time")

_FUSED = (
    "gd",
    "momentum",
    "nesterov",
    "adam",
    "adamw",
    "adagrad",
)  # have fused kernels


def make_optimizer(
    name: str, params: Any, lr: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The named optimizer with PyTorch's defaults apart from `lr` and `momentum`.

    Training is full batch, so "gd" (SGD without momentum) is plain gradient descent.
    "adamw" keeps PyTorch's decoupled weight decay of 0.01, the one thing telling it
    apart from "adam". Fused kernels are used where PyTorch has them (on CPU about
    1.4x faster than foreach for Adam on the paper's 11 x 256 net), foreach otherwise.
    """
    # check the name and the numbers
    if name not in OPTIMIZERS:
        raise TrainingError(
            f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    if not (math.isfinite(lr) and lr > 0):
        raise TrainingError(f"lr={lr!r} for optimizer {name} must be a number > 0")
    if name in ("momentum", "nesterov") and not (
        math.isfinite(momentum) and momentum > 0
    ):
        raise TrainingError(f"optimizer {name} needs momentum > 0, got {momentum!r}")

    # fused where the kernels exist, foreach otherwise
    kernel = {"fused": True} if name in _FUSED else {"foreach": True}
    if name == "gd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, **kernel)
    if name in ("momentum", "nesterov"):
        nesterov = name == "nesterov"
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, **kernel
        )
    optimizer = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }[name]
    return optimizer(params, lr=lr, **kernel)


@dataclass
class TrainSummary:
    """How training went: epochs done, final MSE, wall time, why it stopped."""

    epochs: int
    mse: float
    train_s: float
    stop_reason: str | None  # one of STOP_REASONS; None while training can go on


# what a training state holds (besides the RNG state), as Trainer writes it
STATE_KEYS = frozenset(
    {"model", "optimizer", "epoch", "mse", "stop_reason", "elapsed_s"}
)


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    mse: float,
    stop_reason: str | None,
    elapsed_s: float,
) -> dict:
    """A resumable training state; loadable with torch.load(weights_only=True)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "mse": mse,
        "stop_reason": stop_reason,
        "elapsed_s": elapsed_s,
        "torch_rng_state": torch.get_rng_state(),
    }


class Trainer:
    """Full-batch MSE training of `model` to map `inputs` onto `targets`.

    One epoch is one optimizer step on all of `inputs`. Training stops with
    "converged" once the MSE of the current weights is <= `target_mse`, "diverged"
    when the loss is NaN or infinite, "cap" after `max_epochs`, and "time" after
    `time_limit_s` seconds of training (0: no limit).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        inputs: Tensor,
        targets: Tensor,
        *,
        target_mse: float = 1e-8,
        max_epochs: int = 100_000,
        check_every: int = 10,
        time_limit_s: float = 0.0,
    ):
        # check the data and the stopping rules
        if inputs.ndim != 2 or inputs.shape != targets.shape:
            raise TrainingError(
                f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} "
                "must both be (n, D); flatten the images first"
            )
        for name, value in (("max_epochs", max_epochs), ("check_every", check_every)):
            if value < 1:
                raise TrainingError(f"{name}={value!r} must be >= 1")
        if not target_mse > 0:
            raise TrainingError(f"target_mse={target_mse!r} must be > 0")
        if not time_limit_s >= 0:
            raise TrainingError(f"time_limit_s={time_limit_s!r} must be >= 0 (0: none)")

        self.model, self.optimizer = model, optimizer
        self.inputs, self.targets = inputs, targets  # (n, D) each
        self.target_mse, self.max_epochs = target_mse, max_epochs
        self.check_every, self.time_limit_s = check_every, time_limit_s
        self.epoch = 0
        self.elapsed_s = 0.0
        self.stop_reason: str | None = None
        self.mse = self._measure()

    def _measure(self) -> float:
        """The MSE of the current weights (a no-grad forward, one host sync)."""
        with torch.no_grad():
            return F.mse_loss(self.model(self.inputs), self.targets).item()

    def _loss(self) -> Tensor:
        return F.mse_loss(self.model(self.inputs), self.targets)

    def _step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, epochs: int) -> float:
        """Train up to `epochs` more epochs, stopping early; returns the MSE.

        The loss is computed every step but read (a host sync) only every
        `check_every` epochs. It is read from the forward pass *before* that epoch's
        step, i.e. it is the MSE of the weights as they are at the check, so a stop
        at a check reports exactly the MSE of the model as it is left.
        """
        if self.done or epochs <= 0:
            return self.mse
        start = time.perf_counter()
        stop_at = min(self.epoch + epochs, self.max_epochs)
        while self.epoch < stop_at:
            loss = self._loss()  # () MSE of the current weights, on device
            if self.epoch % self.check_every == 0:
                self.mse = loss.item()
                elapsed = self.elapsed_s + time.perf_counter() - start
                if self._judge(elapsed, final=False):
                    break
            self._step(loss)
            self.epoch += 1
        else:
            # budget spent between checks: measure the weights as they now are
            self.mse = self._measure()
        self.elapsed_s += time.perf_counter() - start
        self._judge(self.elapsed_s, final=True)
        return self.mse

    def _judge(self, elapsed_s: float, final: bool) -> bool:
        """Set stop_reason from the current `mse`; True if training must stop."""
        if not math.isfinite(self.mse):
            self.stop_reason = "diverged"
        elif self.mse <= self.target_mse:
            self.stop_reason = "converged"
        elif final and self.epoch >= self.max_epochs:
            self.stop_reason = "cap"
        elif self.time_limit_s > 0 and elapsed_s >= self.time_limit_s:
            self.stop_reason = "time"
        return self.stop_reason is not None

    @property
    def done(self) -> bool:
        """True once training has stopped for one of STOP_REASONS."""
        return self.stop_reason is not None

    def summary(self) -> TrainSummary:
        return TrainSummary(self.epoch, self.mse, self.elapsed_s, self.stop_reason)

    def state_dict(self) -> dict:
        """Everything needed to resume; loadable with torch.load(weights_only=True)."""
        return training_state(
            self.model, self.optimizer, self.epoch, self.mse, self.stop_reason,
            self.elapsed_s,
        )  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the model and optimizer must be built alike."""
        missing = STATE_KEYS - set(state)
        if missing:
            raise TrainingError(
                f"training state lacks {', '.join(sorted(missing))}; "
                "it was not written by Trainer.state_dict()"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.mse = float(state["mse"])
        self.stop_reason = state["stop_reason"]
        self.elapsed_s = float(state["elapsed_s"])
        if "torch_rng_state" in state:
            torch.set_rng_state(state["torch_rng_state"])


def save_state(state: dict, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically: a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # write a temporary file in the same directory, so os.replace is a rename
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | os.PathLike) -> dict:
    """Read a state written by `save_state`, onto the CPU."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise TrainingError(
            f"no training state at {path}; train from scratch"
        ) from None
    except Exception as err:  # unpickling errors, truncated zip archives, ...
        raise TrainingError(
            f"training state {path} is unreadable ({type(err).__name__}); delete it "
            "to train from scratch"
        ) from err
