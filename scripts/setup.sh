#!/usr/bin/env bash
# Create .venv and install the project with its test tools (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned exactly in pyproject.toml: a looser pin pulls a multi-GB CUDA build
.venv/bin/python -m pip install -q -e ".[dev]"
