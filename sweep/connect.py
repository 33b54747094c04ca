"""Connect to Ray: a local instance on loopback only, or a cluster at an address.

Measured on Ray 2.60: a default local `ray.init()` binds every interface and
advertises the machine's routable address, and `ray.init` on an address where
nothing listens retries for minutes. Here the local instance stays on
127.0.0.1, and an address is checked with one TCP connection first.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from sweep.manifest import LaunchError

# Ray's switch that maps the node address to 127.0.0.1 and binds every port
# there; without it a local instance listens on all interfaces
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # the legacy console engine: at verbose=0 it prints nothing to stdout,
    # where the new one draws boxes (our own progress line is on stderr)
    "RAY_AIR_NEW_OUTPUT": "0",
    # result.json and params.json come from Tune's auto loggers: keep them
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
}
CONNECT_TIMEOUT_S = 3.0  # a live GCS accepts a TCP connection in milliseconds


def connect(
    address: str | None,
    num_cpus: int | None,
    num_gpus: int | None,
    data_dir: str | None,
    experiment: str | None = None,
) -> None:
    """Start local Ray on loopback, or join the cluster at `address`.

    Trials find the data in SWEEP_DATA_DIR and their sweep directory in
    SWEEP_EXPERIMENT, both from the runtime environment set here.
    """
    import ray

    # the data the driver checked, also for workers that `ray start` launched
    # with an environment of their own (on a cluster, or a second node here)
    data_dir = data_dir or os.environ.get("SWEEP_DATA_DIR")
    env = (
        {"SWEEP_DATA_DIR": str(Path(data_dir).expanduser().resolve())}
        if data_dir
        else {}
    )
    if experiment:
        from sweep.trial import EXPERIMENT_ENV

        env[EXPERIMENT_ENV] = experiment
    os.environ.update(QUIET_ENV)
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # 'local' always starts a fresh instance: a stale cluster file left by
        # an earlier `ray start` would otherwise make init hang
        os.environ.update(LOOPBACK_ENV)  # for the daemons this process starts
        # Ray read the switch when it was imported (here, always before this
        # line); without this copy it advertises the routable address and its
        # daemons listen on every interface (measured with ss on 2.60)
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        return
    check_address(address)
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise LaunchError(
            f"no Ray cluster at {address!r} ({first}); start one with `ray up "
            "cluster.yaml` or `ray start --head`, or drop --address to run locally"
        ) from None


def check_address(address: str) -> None:
    """Fail in seconds when nothing listens at host:port: Ray would retry for
    minutes (measured: `ray.init("127.0.0.1:1")` still waiting after 120 s)."""
    if address == "auto":
        return  # Ray resolves it from RAY_ADDRESS or the last `ray start`
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LaunchError(
            f"--address {address!r} is not host:port (or ray://host:port, auto); "
            "e.g. --address 10.0.0.5:6379"
        )
    try:
        socket.create_connection(
            (host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S
        ).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LaunchError(
            f"no Ray cluster at {address!r} (TCP connect: {reason}); start one "
            "with `ray up cluster.yaml` or `ray start --head`, or drop --address "
            "to run locally"
        ) from None


def check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse a per-trial request that fits no node: it would wait forever."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = any(
        n["Resources"].get("CPU", 0) >= cpus_per_trial
        and n["Resources"].get("GPU", 0) >= gpus_per_trial
        for n in nodes
    )
    if not fits:
        biggest = max(
            (
                (n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0))
                for n in nodes
            ),
            default=(0, 0),
        )
        raise LaunchError(
            f"each trial asks for {cpus_per_trial} CPU and {gpus_per_trial} GPU but "
            f"the largest node has {biggest[0]:g} CPU and {biggest[1]:g} GPU; "
            "lower --cpus-per-trial / --gpus-per-trial"
        )
