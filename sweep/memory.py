"""Refuse up front a sweep whose training would not fit in this machine's memory.

A trial's need is `sweep.models.estimate_bytes` of its net (a pack's: that of
its K nets); trials that run side by side on a local Ray add up. Clusters are
not checked: their nodes' memory is not known here.
"""

from __future__ import annotations

import os
from typing import Any

from sweep.config import ConfigError, TrialConfig

FRACTION = 0.8  # of physical memory a sweep may plan to use; the rest is the OS's


def physical_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def trials_at_once(
    num_cpus: int | None, cpus_per_trial: float, max_concurrent: int
) -> int:
    """How many trials a local Ray runs side by side."""
    slots = max(1, int((num_cpus or os.cpu_count() or 1) // cpus_per_trial))
    return min(slots, max_concurrent) if max_concurrent else slots


def check_memory(trials: list[dict[str, Any]], pack: int = 1, at_once: int = 1) -> None:
    """Raise ConfigError if one trial, or `at_once` of the largest side by
    side, would need more than FRACTION of this machine's memory."""
    from sweep.data import image_shape
    from sweep.models import estimate_bytes
    from sweep.packing import pack_groups

    available = FRACTION * physical_bytes()
    configs = [TrialConfig.from_dict(c) for c in trials]
    groups = pack_groups(configs, max(1, pack))  # the trials Tune will run

    # one estimate per distinct net: seeds, rates and inits share it
    estimates: dict[tuple, int] = {}

    def need(cfg: TrialConfig) -> int:
        key = (cfg.model, image_shape(cfg), cfg.width, cfg.depth, cfg.n_train)
        if key not in estimates:
            estimates[key] = estimate_bytes(
                cfg.model,
                image_shape(cfg),
                width=cfg.width,
                depth=cfg.depth,
                n_train=cfg.n_train,
            )
        return estimates[key]

    needs = []
    for group in groups:
        cfg, k = configs[group[0]], len(group)
        needs.append(total := k * need(cfg))
        if total > available:
            packed = f" in a pack of {k}" if k > 1 else ""
            raise ConfigError(
                f"width={cfg.width} depth={cfg.depth} n_train={cfg.n_train} needs "
                f"about {total / 2**30:.1f} GiB to train{packed} but this machine has "
                f"{_budget()}; choose a smaller width or depth"
                + (" or a smaller --pack" if k > 1 else "")
            )
    together = sum(sorted(needs, reverse=True)[:at_once])
    if together > available:
        raise ConfigError(
            f"{min(at_once, len(needs))} trials side by side need about "
            f"{together / 2**30:.1f} GiB but this machine has {_budget()}; "
            "lower --max-concurrent" + (" or --pack" if pack > 1 else "")
        )


def _budget() -> str:
    total = physical_bytes() / 2**30
    usable = FRACTION * total
    return (
        f"{total:.1f} GiB, of which a sweep plans on {FRACTION:.0%} ({usable:.1f} GiB)"
    )
