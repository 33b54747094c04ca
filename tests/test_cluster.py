"""cluster.yaml is checked by Ray's own launcher validation, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep.cluster import validate
from sweep.config import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_shipped_config_is_valid_and_keeps_trials_off_the_head():
    prepared = validate(SHIPPED)
    # the head runs the driver only: 0 CPUs means Ray schedules no trial there
    assert prepared["available_node_types"]["head"]["resources"] == {"CPU": 0}
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start  # dashboard never world-facing
    assert "RAY_AUTH_MODE=token" in start  # token authentication on


def _variant(tmp_path, change) -> Path:
    cfg = yaml.safe_load(SHIPPED.read_text())
    change(cfg)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        # a misspelled top-level key: the schema forbids unknown keys
        (lambda c: c.update(setup_comands=c.pop("setup_commands")), "setup_comands"),
        # node resources must be whole numbers; GPU fractions go per trial
        (
            lambda c: c["available_node_types"]["gpu_worker"].update(
                resources={"GPU": 0.5}
            ),
            "0.5",
        ),
        # head_node_type must name one of the node types (a cross-field rule)
        (lambda c: c.update(head_node_type="missing"), "head_node_type"),
    ],
)
def test_broken_configs_name_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match="not a valid Ray cluster config") as err:
        validate(_variant(tmp_path, change))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
