"""One frozen, typed configuration per trial.

The field names are the keys of a sweep's search space: a trial builds its
`TrialConfig` from the dict Ray Tune hands it on its first line, so a misspelled
or ill-typed key fails at once with a message that names it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from sweep.models import INITS, MODELS
from sweep.nonlinearities import ModelError, canonical_name
from sweep.training import OPTIMIZERS


class ConfigError(ValueError):
    """A configuration value is unknown, missing or out of range."""


DATASETS = ("mnist", "cifar10", "movie")
NOISE_KINDS = ("gaussian", "uniform")
SPECTRAL_METHODS = ("auto", "dense", "matfree")
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs; every field has a documented default."""

    # bookkeeping
    figure: str = "custom"  # which figure of the paper this trial serves
    seed: int = 0  # seeds init, noise starts and the seeded subset

    # data: pixels in [0, 1], images flattened for fully connected nets
    dataset: str = "mnist"
    n_train: int = 10  # training examples (first n, or a seeded subset)
    subset_seed: int | None = None  # None: the first n of the training split
    stride: int = 1  # take every stride-th example (movie frames spread over the film)
    image_size: int | None = None  # resize square images to this side (None: as is)
    grey: bool = False  # convert colour images to one channel
    seq_len: int = 1  # cycle length; 1 is plain autoencoding (f(x_i) = x_i)

    # model
    model: str = "fc"
    width: int = 256  # hidden units (fc) or channels (conv, unet)
    depth: int = 11  # hidden layers (fc); ignored by conv and unet
    nonlinearity: str = "selu"
    init: str = "default"  # see sweep.models.INITS
    init_scale: float = 0.0  # a of U[-a, a], s of N(0, s); 0 for schemes without one
    zero_last: bool = False  # zero the output layer's weights and bias

    # training: full batch, MSE
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9  # used by momentum and nesterov only
    target_mse: float = 1e-8
    max_epochs: int = 100_000
    check_every: int = 10  # epochs between loss checks (each check syncs the device)
    report_every: int = 500  # epochs between progress reports
    checkpoint_every: int = 5_000  # epochs between checkpoints of training state
    time_limit_s: float = 0.0  # stop training after this wall time; 0: no limit

    # measurements
    n_test_starts: int = 100  # held-out test images iterated from
    n_noise_starts: int = 100
    noise: str = "gaussian"
    noise_mean: float = 0.0
    noise_std: float = 1.0
    noise_low: float = 0.0
    noise_high: float = 1.0
    iter_max_steps: int = 1_000
    step_tol: float = 1e-6  # settled when ||x_{k+1} - x_k|| <= step_tol * sqrt(d)
    match_tol: float = 1e-2  # relative distance under which an endpoint "is" x_i
    fixed_point_tol: float = 1e-3  # relative residual ||f(x_i) - x_i|| / ||x_i||
    max_period: int = 0  # longest orbit period searched outside stored cycles; 0: 2L
    spectral_method: str = "auto"
    gallery_size: int = 8  # starts whose trajectories are kept for galleries

    # execution
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Build from a search-space dict, rejecting keys that are not fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; "
                f"known fields: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)

    @property
    def n_cycles(self) -> int:
        return self.n_train // self.seq_len


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrialConfig)


@functools.cache
def field_type(name: str) -> type:
    """The Python type of a field (int, float, bool or str), Optional stripped."""
    tp = _hints()[name]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def coerce(name: str, value: Any) -> Any:
    """Turn a command-line string (or a YAML scalar) into the field's type."""
    known = {f.name for f in fields(TrialConfig)}
    if name not in known:
        raise ConfigError(f"unknown config field {name!r}")
    tp = field_type(name)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    if not isinstance(value, str):
        return value
    try:
        if tp is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if "e" in value.lower():  # 1e5 is an int; 25e-1 is not
                number = float(value)
                if not number.is_integer():
                    raise ValueError(value)
                return int(number)
            return int(value)
        if tp is float:
            return float(value)
    except (ValueError, OverflowError):  # int(float("1e400")) overflows
        raise ConfigError(f"{name}={value!r} is not a valid {tp.__name__}") from None
    return value


def _check_types(cfg: TrialConfig) -> None:
    hints = _hints()
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        optional = "None" in str(hints[f.name])
        if value is None:
            if not optional:
                raise ConfigError(f"{f.name} must not be empty")
            continue
        tp = field_type(f.name)
        ok = isinstance(value, tp)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if tp is int and isinstance(value, bool):
            ok = False
        if tp is int and isinstance(value, float) and value.is_integer():
            object.__setattr__(cfg, f.name, int(value))
            ok = True
        if not ok:
            raise ConfigError(
                f"{f.name}={value!r} must be a {tp.__name__}, "
                f"not {type(value).__name__}"
            )
        if tp is float and not math.isfinite(getattr(cfg, f.name)):
            raise ConfigError(f"{f.name}={value!r} must be a finite number")


def _check_values(cfg: TrialConfig) -> None:
    def choice(name: str, options: tuple[str, ...]) -> None:
        if getattr(cfg, name) not in options:
            raise ConfigError(
                f"unknown {name} {getattr(cfg, name)!r}; "
                f"choose one of {', '.join(options)}"
            )

    def at_least(name: str, low: float) -> None:
        if getattr(cfg, name) < low:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} must be >= {low}")

    def positive(name: str) -> None:
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} must be > 0")

    choice("dataset", DATASETS)
    choice("model", MODELS)
    choice("optimizer", OPTIMIZERS)
    choice("init", INITS)
    try:
        # one spelling per function, so tables do not split "SELU" from "selu"
        object.__setattr__(cfg, "nonlinearity", canonical_name(cfg.nonlinearity))
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.subset_seed is not None:
        at_least("subset_seed", 0)
    if cfg.init in ("uniform", "normal") and not cfg.init_scale > 0:
        raise ConfigError(
            f"init={cfg.init} needs init_scale > 0 (the a of U[-a, a] or s of N(0, s))"
        )
    choice("noise", NOISE_KINDS)
    choice("spectral_method", SPECTRAL_METHODS)
    choice("device", DEVICES)
    for name in ("n_train", "seq_len", "width", "depth", "max_epochs", "stride"):
        at_least(name, 1)
    for name in ("check_every", "report_every", "checkpoint_every", "iter_max_steps"):
        at_least(name, 1)
    for name in ("n_test_starts", "n_noise_starts", "max_period", "gallery_size"):
        at_least(name, 0)
    for name in ("lr", "target_mse", "step_tol", "match_tol", "fixed_point_tol"):
        positive(name)
    for name in ("init_scale", "momentum", "time_limit_s", "noise_std"):
        at_least(name, 0)
    if cfg.image_size is not None:
        at_least("image_size", 1)
    if cfg.noise_low > cfg.noise_high:
        raise ConfigError(
            f"noise_low={cfg.noise_low} must not exceed noise_high={cfg.noise_high}"
        )
    if cfg.stride > 1 and cfg.subset_seed is not None:
        raise ConfigError("stride and subset_seed exclude each other; set one of them")
    if cfg.n_train % cfg.seq_len:
        raise ConfigError(
            f"seq_len={cfg.seq_len} does not divide n_train={cfg.n_train}; "
            "choose a sequence length that splits the examples into whole cycles"
        )
    side = cfg.image_size or {"mnist": 28, "cifar10": 32, "movie": 128}[cfg.dataset]
    if cfg.model in ("conv", "unet") and side != 32:
        raise ConfigError(
            f"model={cfg.model} is built for 32x32 images but {cfg.dataset} "
            f"images here are {side}x{side}; set image_size=32"
        )
