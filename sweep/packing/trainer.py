"""Train the K nets of a pack at once, full batch, each as it would train alone."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sweep.models import build_model
from sweep.packing.nets import PackedFC, PackingError
from sweep.training import STATE_KEYS, TrainSummary, make_optimizer, training_state


class Member:
    """One trial of a pack, read like a `Trainer`: epoch, mse, done, summary()."""

    def __init__(self, pack: PackedTrainer, lr: float, target_mse: float):
        self.pack, self.lr, self.target_mse = pack, lr, target_mse
        self.epoch, self.mse, self.elapsed_s = 0, math.nan, 0.0
        self.stop_reason: str | None = None
        self.retired: tuple[list[Tensor], list[dict]] | None = None  # weights, state

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def judge(self, mse: float, final: bool) -> bool:
        """`Trainer`'s stopping rules, in its order; True if this member stops."""
        self.mse, pack = mse, self.pack
        if not math.isfinite(mse):
            self.stop_reason = "diverged"
        elif mse <= self.target_mse:
            self.stop_reason = "converged"
        elif final and self.epoch >= pack.max_epochs:
            self.stop_reason = "cap"
        elif pack.time_limit_s > 0 and self.elapsed_s >= pack.time_limit_s:
            self.stop_reason = "time"
        return self.done

    def summary(self) -> TrainSummary:
        return TrainSummary(self.epoch, self.mse, self.elapsed_s, self.stop_reason)


class PackedTrainer:
    """Full-batch MSE training of the K nets of `packed`, each with its own lr.

    inputs and targets are (K, n, d): member k maps inputs[k] onto targets[k].
    Stopping follows `sweep.training.Trainer` per member: the MSE is read every
    `check_every` epochs from the forward pass before that epoch's step, and a
    member that converges, diverges or runs out of time is retired at that
    check; the rest train on. `time_limit_s` is each member's own wall time in
    the pack, which is K nets' time per step, not one's.
    """

    def __init__(
        self,
        packed: PackedFC,
        optimizer: str,
        lrs: Sequence[float],
        inputs: Tensor,
        targets: Tensor,
        *,
        momentum: float = 0.9,
        target_mse: float | Sequence[float] = 1e-8,
        max_epochs: int = 100_000,
        check_every: int = 10,
        time_limit_s: float = 0.0,
    ):
        # check the shapes: one row of data per net
        k, d = len(packed), math.prod(packed.shape)
        rows = (inputs.shape[0], inputs.shape[-1]) if inputs.ndim == 3 else None
        if inputs.shape != targets.shape or rows != (k, d):
            raise PackingError(
                f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} "
                f"must both be (K={k}, n, d={d}); stack one data set per net"
            )
        targets_mse = (
            [target_mse] * k if isinstance(target_mse, int | float) else target_mse
        )
        if len(lrs) != k or len(targets_mse) != k:
            raise PackingError(f"pass one lr and one target_mse per net ({k})")
        self.optimizer, self.momentum = optimizer, momentum
        self.max_epochs, self.check_every = max_epochs, check_every
        self.time_limit_s = time_limit_s
        self.members = [
            Member(self, lr, t) for lr, t in zip(lrs, targets_mse, strict=True)
        ]
        self.epoch = 0

        # rows sorted by lr, so each learning rate is one block of rows
        self.active = sorted(range(k), key=lambda i: lrs[i])  # member of each row
        self.packed = packed.select(self.active)
        self.inputs, self.targets = inputs[self.active], targets[self.active]
        self._build_groups([[{} for _ in self.packed.params] for _ in self.active])
        self._measure_all()

    @property
    def done(self) -> bool:
        return not self.active

    @property
    def mses(self) -> list[float]:
        return [m.mse for m in self.members]

    def run(self, epochs: int) -> list[float]:
        """Train up to `epochs` more epochs, retiring members as they stop.

        Returns every member's MSE (a retired member's from when it stopped).
        """
        if self.done or epochs <= 0:
            return self.mses
        self._clock = time.perf_counter()
        stop_at = min(self.epoch + epochs, self.max_epochs)
        while self.active and self.epoch < stop_at:
            mse = self._loss()  # (K_active,) each net's MSE, on device
            if self.epoch % self.check_every == 0:
                # one host sync per check, as Trainer does
                stopped = self._judge(mse.tolist(), final=False)
                if stopped:
                    self._retire(stopped)
                    continue  # the others' loss is recomputed on the smaller pack
            self._step(mse)
            self.epoch += 1
        if self.active:
            # budget spent between checks: judge the weights as they now are
            self._retire(self._judge(self._measure(), final=True))
        return self.mses

    def model(self, k: int) -> nn.Sequential:
        """Member k as a plain `build_model("fc", ...)` net, with its weights now."""
        weights, _ = self._weights_and_state(k)
        model = self._blank_model()
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights, strict=True):
                p.copy_(w)
        return model

    def state_dict(self, k: int) -> dict:
        """Member k's state in `Trainer.state_dict()`'s format (resumable alone)."""
        member = self.members[k]
        model = self.model(k)
        optimizer = self._single_optimizer(k, model)
        _, state = self._weights_and_state(k)
        for p, entries in zip(model.parameters(), state, strict=True):
            if entries:
                optimizer.state[p] = entries
        return training_state(
            model, optimizer, member.epoch, member.mse, member.stop_reason,
            member.elapsed_s,
        )  # fmt: skip

    def load_state_dicts(self, states: Sequence[dict | None]) -> None:
        """Resume members from `Trainer.state_dict()`s (None: start afresh).

        Members still training must resume at one epoch, to step together.
        """
        if (
            len(states) != len(self.members)
            or self.epoch
            or len(self.active) < len(self.members)
        ):
            raise PackingError("load states once, before training, one per member")
        rows = []
        for row, k in enumerate(self.active):
            weights, state = self._weights_and_state(k)
            if states[k] is not None:
                weights, state = self._load_member(k, states[k])
                for p, w in zip(self.packed.params, weights, strict=True):
                    p.data[row].copy_(w)
            rows.append(state)
        self._build_groups(rows)
        self._retire([r for r, k in enumerate(self.active) if self.members[k].done])
        epochs = {self.members[k].epoch for k in self.active}
        if len(epochs) > 1:
            raise PackingError(
                f"members to train resume at different epochs {sorted(epochs)}; "
                "resume them one by one with sweep.trial.run_trial"
            )
        self.epoch = epochs.pop() if epochs else 0

    # ------------------------------------------------------------ the step

    def _loss(self) -> Tensor:
        out = self.packed(self.inputs)  # (K, n, d)
        return (out - self.targets).pow(2).mean(dim=(1, 2))

    def _measure(self) -> list[float]:
        with torch.no_grad():
            return self._loss().tolist()

    def _step(self, mse: Tensor) -> None:
        # the sum's gradient in net k's weights is that of net k's own MSE
        grads = torch.autograd.grad(mse.sum(), list(self.packed.params))
        per_row = [grad.unbind(0) for grad in grads]  # (K,) views a parameter
        for group in self.groups:
            for row, views in zip(group.rows, group.views, strict=True):
                for view, grad in zip(views, per_row, strict=True):
                    view.grad = grad[row]  # replaced each step, never accumulated
            group.optimizer.step()

    def _judge(self, mses: list[float], final: bool) -> list[int]:
        """Rows whose member stops now, by Trainer's rules."""
        now = time.perf_counter()
        for k in self.active:
            member = self.members[k]
            member.epoch = self.epoch
            member.elapsed_s += now - self._clock
        self._clock = now
        return [
            row
            for row, (k, mse) in enumerate(zip(self.active, mses, strict=True))
            if self.members[k].judge(mse, final)
        ]

    # ------------------------------------------------------------ bookkeeping

    def _build_groups(self, row_states: list[list[dict]]) -> None:
        """One optimizer per learning rate, over each of its rows' own views.

        Every row's weights are tensors of their own in the optimizer, shaped
        as the net's alone, so the optimizer's kernels split and round each
        exactly as for the trial alone (one tensor of many rows would put a
        row's elements elsewhere in the kernels' vector body and scalar tail,
        and its last bits would drift from the trial's).
        """
        self.groups: list[_Group] = []
        lrs = [self.members[k].lr for k in self.active]
        start = 0
        while start < len(lrs):
            stop = start
            while stop < len(lrs) and lrs[stop] == lrs[start]:
                stop += 1
            rows = list(range(start, stop))
            views = [
                [nn.Parameter(p.data[r]) for p in self.packed.params] for r in rows
            ]
            flat = [view for row_views in views for view in row_views]
            optimizer = make_optimizer(self.optimizer, flat, lrs[start], self.momentum)
            for r, row_views in zip(rows, views, strict=True):
                for view, entries in zip(row_views, row_states[r], strict=True):
                    if entries:
                        optimizer.state[view] = entries
            self.groups.append(_Group(rows, views, optimizer))
            start = stop

    def _row_state(self, row: int) -> list[dict]:
        """The optimizer state of one row, per parameter, as one net's state."""
        group = next(g for g in self.groups if row in g.rows)
        views = group.views[group.rows.index(row)]
        return [
            {
                key: _copy(value)
                for key, value in group.optimizer.state.get(v, {}).items()
            }
            for v in views
        ]

    def _weights_and_state(self, k: int) -> tuple[list[Tensor], list[dict]]:
        member = self.members[k]
        if member.retired is not None:
            return member.retired
        row = self.active.index(k)
        weights = [p.detach()[row].clone() for p in self.packed.params]
        return weights, self._row_state(row)

    def _retire(self, rows: list[int]) -> None:
        """Take the members at `rows` out of the pack, keeping what they are now."""
        if not rows:
            return
        for row in rows:
            weights = [p.detach()[row].clone() for p in self.packed.params]
            self.members[self.active[row]].retired = (weights, self._row_state(row))
        keep = [r for r in range(len(self.active)) if r not in rows]
        states = [self._row_state(r) for r in keep]
        self.active = [self.active[r] for r in keep]
        if keep:
            self.packed = self.packed.select(keep)
            self.inputs, self.targets = self.inputs[keep], self.targets[keep]
        self._build_groups(states)

    def _measure_all(self) -> None:
        for k, mse in zip(self.active, self._measure(), strict=True):
            self.members[k].mse = mse

    def _blank_model(self) -> nn.Sequential:
        p = self.packed
        model = build_model(
            "fc", p.shape, width=p.width, depth=p.depth, nonlinearity=p.nonlinearity
        )
        return model.to(p.params[0].device)

    def _single_optimizer(self, k: int, model: nn.Module) -> torch.optim.Optimizer:
        lr = self.members[k].lr
        return make_optimizer(self.optimizer, model.parameters(), lr, self.momentum)

    def _load_member(self, k: int, state: dict) -> tuple[list[Tensor], list[dict]]:
        """Weights and optimizer state of a `Trainer.state_dict()`, per parameter."""
        missing = STATE_KEYS - set(state)
        if missing:
            raise PackingError(
                f"training state of member {k} lacks {', '.join(sorted(missing))}; "
                "it was not written by Trainer.state_dict()"
            )
        model = self._blank_model()
        model.load_state_dict(state["model"])
        optimizer = self._single_optimizer(k, model)
        optimizer.load_state_dict(state["optimizer"])
        member = self.members[k]
        member.epoch, member.mse = int(state["epoch"]), float(state["mse"])
        member.stop_reason, member.elapsed_s = state["stop_reason"], state["elapsed_s"]
        weights = [p.detach() for p in model.parameters()]
        # copies: training the pack must not change the caller's state dict
        # (Optimizer.load_state_dict keeps tensors that need no cast as they are)
        state = [
            {key: _copy(value) for key, value in optimizer.state.get(p, {}).items()}
            for p in model.parameters()
        ]
        return weights, state


class _Group:
    """The rows sharing one learning rate, each row's views, and their optimizer."""

    def __init__(self, rows: list[int], views: list[list[nn.Parameter]], optimizer):
        self.rows, self.views, self.optimizer = rows, views, optimizer


def _copy(value: Any) -> Any:
    return value.clone() if torch.is_tensor(value) else value
