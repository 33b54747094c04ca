"""Packed trials: which configs pack together, and `run_trial` for a pack."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from sweep.config import TrialConfig
from sweep.models import initial_model
from sweep.packing.nets import PackedFC, PackingError
from sweep.packing.trainer import PackedTrainer

# Fields every packed config must share: they fix the model's shape, the data's
# shape, the optimizer and the training loop's schedule. The rest (seed, init,
# lr, target_mse, subset_seed, seq_len, measurement settings) may differ.
MUST_MATCH = tuple(
    "dataset n_train image_size grey model width depth nonlinearity optimizer "
    "momentum max_epochs check_every report_every checkpoint_every time_limit_s "
    "device".split()
)


def check_packable(cfgs: Sequence[TrialConfig]) -> None:
    """Raise PackingError unless the configs can train as one packed model."""
    if not cfgs:
        raise PackingError("no configs to pack; pass at least one TrialConfig")
    first = cfgs[0]
    if first.model != "fc":
        raise PackingError(
            f"model={first.model} cannot be packed; only fc nets are, run it alone"
        )
    for name in MUST_MATCH:
        values = sorted({repr(getattr(c, name)) for c in cfgs})
        if len(values) > 1:
            raise PackingError(
                f"configs differ in {name} ({', '.join(values)}); pack only "
                f"trials that share {', '.join(MUST_MATCH)}"
            )


def pack_groups(cfgs: Sequence[TrialConfig], max_k: int) -> list[list[int]]:
    """Indices of `cfgs` in packs of at most `max_k` packable configs each.

    Configs are grouped by the fields in MUST_MATCH, in their order of first
    appearance; conv and unet cells come back alone.
    """
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = (i,) if cfg.model != "fc" else tuple(getattr(cfg, f) for f in MUST_MATCH)
        groups.setdefault(key, []).append(i)
    return [
        g[lo : lo + max_k] for g in groups.values() for lo in range(0, len(g), max_k)
    ]


def run_packed(
    cfgs: Sequence[TrialConfig],
    sinks: Sequence[Any],
    data_dir: str | None = None,
    flush: Callable[[], None] = lambda: None,
) -> list[dict]:
    """`sweep.trial.run_trial` for K packable configs, trained as one pack.

    Each sink sees what it would see from `run_trial`: the same progress reports
    and checkpoints (resumable alone), then the same final record, written by
    `run_trial` itself from the state packed training ended with. A member is
    measured as soon as it stops training, while the others wait, so its
    record is stored as early as it would be alone. `flush` is called after
    each round of reports (once per `report_every` epochs, and after each final
    record), for sinks that send a pack's reports on together
    (`sweep.packing.files.PackFiles`). Returns the final metrics, one per config.
    """
    from sweep.trial import run_trial  # imports Ray; keep it out of the pack's path

    check_packable(cfgs)
    if len(sinks) != len(cfgs):
        raise PackingError(f"pass one sink per config ({len(cfgs)}), not {len(sinks)}")
    finals = [sink.finished() for sink in sinks]
    todo = [k for k, final in enumerate(finals) if final is None]

    # members step together, so a resumed pack trains as one pack per epoch its
    # members' checkpoints were saved at (a member that stopped training after
    # the others' last checkpoint resumes from an older one)
    states = {k: sinks[k].restore() for k in todo}
    by_epoch: dict[int, list[int]] = {}
    for k in todo:
        by_epoch.setdefault(_epoch(states[k]), []).append(k)
    for group in by_epoch.values():
        stopped = train_packed(
            [cfgs[k] for k in group],
            [sinks[k] for k in group],
            data_dir,
            states=[states[k] for k in group],
            flush=flush,
        )
        for j, state in stopped:
            k = group[j]
            finals[k] = run_trial(cfgs[k], _Trained(sinks[k], state), data_dir)
            flush()
    return finals


def train_packed(
    cfgs: Sequence[TrialConfig],
    sinks: Sequence[Any],
    data_dir: str | None = None,
    states: Sequence[dict | None] | None = None,
    flush: Callable[[], None] = lambda: None,
) -> Iterator[tuple[int, dict]]:
    """Train the configs as one pack, reporting to each sink as `run_trial` does.

    `states` are the members' training states to resume from (by default each
    sink's `restore()`). Yields (k, member k's final `Trainer.state_dict()`) as
    each member stops; training goes on when the caller asks for the next.
    """
    from sweep.trial import STATE_FILE, progress, resolve_device, save_state

    check_packable(cfgs)
    first = cfgs[0]
    device = resolve_device(first.device)
    trainer = _packed_trainer(cfgs, data_dir, device)

    # resume: every member continues from its own last checkpoint
    if states is None:
        states = [sink.restore() for sink in sinks]
    trainer.load_state_dicts(list(states))
    last_checkpoint = [m.epoch for m in trainer.members]
    for k in range(len(cfgs)):
        if k not in trainer.active:
            yield k, trainer.state_dict(k)  # had stopped before its checkpoint

    # train, reporting progress and checkpointing each member as run_trial does
    while not trainer.done:
        running = list(trainer.active)
        trainer.run(first.report_every)
        with tempfile.TemporaryDirectory() as tmp:
            for k in running:
                member = trainer.members[k]
                if member.done:
                    continue  # its final record comes from run_trial
                checkpoint = None
                if member.epoch - last_checkpoint[k] >= first.checkpoint_every:
                    folder = Path(tmp) / str(k)
                    folder.mkdir()
                    save_state(trainer.state_dict(k), folder / STATE_FILE)
                    checkpoint, last_checkpoint[k] = folder, member.epoch
                sinks[k].report(progress(member), checkpoint)
            flush()
        for k in running:
            if trainer.members[k].done:
                yield k, trainer.state_dict(k)


def _epoch(state: dict | None) -> int:
    return 0 if state is None else int(state["epoch"])


def _packed_trainer(
    cfgs: Sequence[TrialConfig], data_dir: str | None, device: torch.device
) -> PackedTrainer:
    from sweep.trial import load_inputs, sequence_targets

    # data and initial weights exactly as run_trial makes them, trial by trial
    models, inputs, targets = [], [], []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)  # run_trial seeds before loading its data
        train, _, shape = load_inputs(cfg, data_dir)
        models.append(initial_model(cfg, shape))
        inputs.append(train)
        targets.append(sequence_targets(train, cfg.seq_len))
    first = cfgs[0]
    packed = PackedFC.from_models(
        models,
        shape,
        width=first.width,
        depth=first.depth,
        nonlinearity=first.nonlinearity,
    ).to(device)
    return PackedTrainer(
        packed,
        first.optimizer,
        [c.lr for c in cfgs],
        torch.stack(inputs).to(device),  # (K, n, d)
        torch.stack(targets).to(device),
        momentum=first.momentum,
        target_mse=[c.target_mse for c in cfgs],
        max_epochs=first.max_epochs,
        check_every=first.check_every,
        time_limit_s=first.time_limit_s,
    )


class _Trained:
    """A sink whose checkpoint is the state packed training ended with.

    `run_trial` resumes from it: training is already done, so it goes straight
    to measuring and writes the final record through the real sink.
    """

    def __init__(self, sink: Any, state: dict):
        self.sink, self.state = sink, state

    def finished(self) -> dict | None:
        return None  # run_packed asked the real sink already

    def restore(self) -> dict | None:
        return self.state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)  # report, and whatever else a Sink has
