#!/usr/bin/env bash
# Set up, then run the default tests and the slow ones (see README, Tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export SWEEP_DATA_DIR="${SWEEP_DATA_DIR:-$(cd .. && pwd)/shared/data}"
.venv/bin/ruff check sweep analysis tests
.venv/bin/python -m pytest -q "$@"
.venv/bin/python -m pytest -q -m slow "$@"
