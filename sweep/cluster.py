"""Offline validation of a Ray cluster-launcher config (`cluster.yaml`).

Ray's JSON schema alone rejects valid on-premise configs and misses cross-field
errors, so this runs the launcher's own two steps, as `ray up` does before it
touches a cloud: `prepare_config` (merges provider defaults) and then
`validate_config` (schema plus cross-field checks). Both are private Ray APIs,
which is one reason Ray is pinned exactly.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import yaml

from sweep.config import ConfigError


def validate(path: Path) -> dict:
    """Return the prepared config, or raise ConfigError naming the first problem."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config logs its defaults at INFO ("setting max workers ...")
    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping (a Ray cluster config)")
    try:
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except Exception as exc:  # jsonschema, KeyError, ValueError ...
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        first = message.strip().splitlines()[0]
        raise ConfigError(
            f"{path} is not a valid Ray cluster config: "
            f"{first}{f' (at {where})' if where else ''}"
        ) from None
    return prepared
