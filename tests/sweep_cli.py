"""Run the `sweep` command in a subprocess, as a user's shell would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m sweep ARGS` from the repository root; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
