"""Measure what a trained network stores: attractors, limit cycles, spurious memories.

Turns the dynamics module's reports into one JSON-ready record per trial (the
`measurements.json` that `analysis/` reads), the scalar summary the trial
reports, and a small gallery of trajectories for the figures.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sweep import dynamics
from sweep import metrics as m
from sweep.config import TrialConfig

SCHEMA_VERSION = 1

# iterates kept per gallery start; the last entry is replaced by the endpoint
GALLERY_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass
class Starts:
    """Starting points for iteration, flattened: (n, d) per kind."""

    test: torch.Tensor
    noise: torch.Tensor


def tolerances(cfg: TrialConfig) -> dynamics.Tolerances:
    return dynamics.Tolerances(
        fixed_point_tol=cfg.fixed_point_tol,
        match_tol=cfg.match_tol,
        step_tol=cfg.step_tol,
        max_steps=cfg.iter_max_steps,
        max_period=cfg.max_period,
    )


def as_map(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    model.eval()
    return model


def measure(
    model: nn.Module, cycles: torch.Tensor, starts: Starts, cfg: TrialConfig
) -> tuple[dict, dict[str, np.ndarray]]:
    """Classify the stored cycles and every start; return (record, gallery arrays).

    `cycles` is (n_cycles, L, d): the training examples in cycle order (L = 1
    for autoencoders, where each example is its own cycle).
    """
    tol = tolerances(cfg)
    n_cycles, length, d = cycles.shape

    # stability in float64: eigenvalues near 1 decide the answer
    f64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        reports = dynamics.measure_cycles(
            f64, cycles.double(), tol, method=cfg.spectral_method
        )

    # iterate every start in one batch so spurious endpoints merge across kinds
    f = as_map(model)
    kinds = ["test"] * len(starts.test) + ["noise"] * len(starts.noise)
    everything = torch.cat([starts.test, starts.noise]).to(cycles.dtype)
    if len(everything):
        outcomes = dynamics.classify_starts(
            f, everything, cycles, tol, method=cfg.spectral_method
        )
    else:
        outcomes = None

    record = {
        "schema": SCHEMA_VERSION,
        "seq_len": length,
        "examples": _examples(reports, outcomes, kinds, length, tol.fixed_point_tol),
        "cycles": _cycles(reports, outcomes, kinds, length),
        "starts": _starts(outcomes, kinds),
        "spurious": _spurious(outcomes, kinds),
    }
    gallery = _gallery(f, everything, outcomes, kinds, cycles, cfg)
    return record, gallery


def _hits(outcomes, kinds, outcome: str, n: int) -> dict[str, list[int]]:
    """Per start kind, how many starts reached each of n targets."""
    out = {}
    for kind in m.START_KINDS:
        counts = np.zeros(n, dtype=int)
        if outcomes is not None:
            mask = (np.asarray(kinds) == kind) & (outcomes.outcome == outcome)
            counts = np.bincount(outcomes.target[mask], minlength=n)[:n]
        out[kind] = counts.tolist()
    return out


def _examples(
    reports, outcomes, kinds, length: int, fixed_point_tol: float
) -> list[dict]:
    hits = _hits(outcomes, kinds, "train", len(reports)) if length == 1 else None
    rows = []
    for c, rep in enumerate(reports):
        for j in range(length):
            row = {
                "index": c * length + j,
                "cycle": c,
                "position": j,
                "residual": float(rep.residuals[j]),
                "spectral_radius": float(rep.step_radii[j]),
                "fixed_point": bool(rep.residuals[j] <= fixed_point_tol),
                "stored": bool(rep.stable),
            }
            for kind in m.START_KINDS:
                row[f"hits_{kind}"] = hits[kind][c] if hits else 0
            rows.append(row)
    return rows


def _cycles(reports, outcomes, kinds, length: int) -> list[dict]:
    hits = _hits(outcomes, kinds, "cycle", len(reports)) if length > 1 else None
    rows = []
    for c, rep in enumerate(reports):
        row = {
            "cycle": c,
            "length": length,
            "max_residual": float(np.max(rep.residuals)),
            "spectral_radius": _finite(rep.spectral_radius),
            "maps": bool(rep.maps),
            "stable": bool(rep.stable),
        }
        for kind in m.START_KINDS:
            row[f"hits_{kind}"] = hits[kind][c] if hits else 0
        rows.append(row)
    return rows


def _starts(outcomes, kinds) -> list[dict]:
    rows = []
    for kind in m.START_KINDS:
        mask = np.asarray(kinds) == kind
        row = {"start_kind": kind, "n": int(mask.sum())}
        for outcome in m.OUTCOMES:
            hit = 0 if outcomes is None else (outcomes.outcome[mask] == outcome).sum()
            row[outcome] = int(hit)
        steps = outcomes.steps[mask] if outcomes is not None else np.array([])
        row["mean_steps"] = float(steps.mean()) if len(steps) else None
        rows.append(row)
    return rows


def _spurious(outcomes, kinds) -> list[dict]:
    if outcomes is None:
        return []
    rows = []
    kinds = np.asarray(kinds)
    spurious_mask = np.isin(outcomes.outcome, ("spurious_fixed", "spurious_cycle"))
    for s, att in enumerate(outcomes.spurious):
        on_it = spurious_mask & (outcomes.target == s)
        rows.append(
            {
                "attractor": s,
                "period": int(att.period),
                "spectral_radius": _finite(att.spectral_radius),
                "stable": bool(att.stable),
                "hits_test": int((on_it & (kinds == "test")).sum()),
                "hits_noise": int((on_it & (kinds == "noise")).sum()),
            }
        )
    return rows


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _gallery(f, everything, outcomes, kinds, cycles, cfg) -> dict[str, np.ndarray]:
    """A few starts per kind with iterates along the way, as float16 arrays."""
    n_cycles, length, d = cycles.shape
    gallery: dict[str, np.ndarray] = {
        "train": cycles.reshape(-1, d).cpu().numpy().astype(np.float16)
    }
    if outcomes is None or cfg.gallery_size == 0:
        return gallery

    # half the gallery from each start kind, the first starts of each
    kinds = np.asarray(kinds)
    per_kind = max(1, cfg.gallery_size // 2)
    picks = np.concatenate(
        [np.flatnonzero(kinds == k)[:per_kind] for k in m.START_KINDS]
    )
    steps = [s for s in GALLERY_STEPS if s < cfg.iter_max_steps]
    with torch.no_grad():
        iterates = dynamics.trajectory(f, everything[picks], steps)  # (g, T, d)
    shown = np.concatenate(
        [iterates.cpu().numpy(), outcomes.ends[picks, None].cpu().numpy()], axis=1
    )
    with np.errstate(over="ignore"):  # a diverging start's iterates become inf
        shown = shown.astype(np.float16)
    gallery.update(
        steps=np.asarray(steps + [cfg.iter_max_steps]),
        iterates=shown,
        start_kind=kinds[picks].astype(str),
        outcome=outcomes.outcome[picks].astype(str),
        target=outcomes.target[picks].astype(np.int64),
        end_steps=outcomes.steps[picks].astype(np.int64),
    )

    # sequences: keep a noise start's whole recall, long enough to play every cycle
    if length > 1:
        noise_picks = np.flatnonzero(kinds == "noise")[:2]
        if len(noise_picks):
            horizon = min(cfg.iter_max_steps, 3 * length)
            with torch.no_grad():
                recall = dynamics.trajectory(
                    f, everything[noise_picks], list(range(horizon + 1))
                )
            gallery["recall"] = recall.cpu().numpy().astype(np.float16)
    return gallery


def summarize(record: dict, cfg: TrialConfig) -> dict:
    """The scalar metrics of the final report, derived from the record."""
    examples, cycles = record["examples"], record["cycles"]
    radii = np.array([e["spectral_radius"] for e in examples], dtype=float)
    stable = [c for c in cycles if c["stable"]]
    summary = {
        m.N_TRAIN: len(examples),
        m.N_CYCLES: len(cycles),
        m.N_FIXED_POINTS: sum(e["fixed_point"] for e in examples),
        m.N_ATTRACTORS: len(stable) if record["seq_len"] == 1 else 0,
        m.N_STABLE_CYCLES: len(stable),
        m.N_STORED: sum(c["length"] for c in stable),
        m.MAX_RADIUS: float(np.nanmax(radii)) if len(radii) else math.nan,
        m.MEDIAN_RADIUS: float(np.nanmedian(radii)) if len(radii) else math.nan,
        m.N_SPURIOUS: sum(s["stable"] for s in record["spurious"]),
        m.N_SPURIOUS_UNSTABLE: sum(not s["stable"] for s in record["spurious"]),
    }
    for row in record["starts"]:
        for outcome in m.OUTCOMES:
            summary[m.outcome_metric(row["start_kind"], outcome)] = row[outcome]
    return summary
