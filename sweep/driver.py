"""Which process is running a sweep: the sweep directory's `driver.json`.

While `sweep run` or `sweep resume` drives a sweep, `driver.json` names its
host, process id and the process's start time (so a reused pid is not taken
for it). A second driver for the same sweep is refused while the first is
alive, and readers tell a trial that is still running from one whose driver
was stopped (Ctrl-C, a crash): Tune's own state says neither. A driver killed
with SIGKILL leaves the file behind; a dead pid (or another process under it)
marks it stale, and the next run takes it over. Local directories only: on
`s3://`-like storage there is no file lock to read from another host.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from sweep.manifest import LaunchError, is_uri

DRIVER_FILE = "driver.json"


def process_started(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, None if none.

    Field 22 of /proc/<pid>/stat; with the pid it names one process for good.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the name


def live_driver(exp: str | Path) -> dict | None:
    """The driver recorded for a sweep if it is alive on this host, else None.

    A driver on another host cannot be checked from here: it counts as alive.
    """
    if is_uri(str(exp)):
        return None
    path = Path(exp) / DRIVER_FILE
    try:
        driver = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(driver, dict):
        return None
    if driver.get("host") != socket.gethostname():
        return driver
    pid = driver.get("pid")
    started = process_started(pid) if isinstance(pid, int) else None
    return driver if started is not None and started == driver.get("started") else None


def has_driver_file(exp: str | Path) -> bool:
    return not is_uri(str(exp)) and (Path(exp) / DRIVER_FILE).exists()


def check_free(exp: str) -> None:
    """Refuse to drive a sweep that a live process is driving already."""
    other = live_driver(exp)
    if other is not None:
        raise LaunchError(
            f"{exp} is being run by process {other.get('pid')} on "
            f"{other.get('host')} (since {other.get('since')}); wait for it, or "
            f"stop it with `kill -INT {other.get('pid')}` and `sweep resume` it"
        )


@contextlib.contextmanager
def hold(exp: str) -> Iterator[None]:
    """Record this process as the sweep's driver, refusing a second one."""
    if is_uri(exp):
        yield
        return
    check_free(exp)
    path = Path(exp) / DRIVER_FILE
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_started(os.getpid()),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(me))
    os.replace(tmp, path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
