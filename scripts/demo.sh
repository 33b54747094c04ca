#!/usr/bin/env bash
# The main job: the quick profile of fig3 (optimizers x nonlinearities) on real
# MNIST, then an HTML report. Data: --data-dir, $SWEEP_DATA_DIR, or ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export SWEEP_DATA_DIR="${SWEEP_DATA_DIR:-$(cd .. && pwd)/shared/data}"
.venv/bin/sweep run fig3 --profile quick --storage results "$@"
.venv/bin/sweep report results/fig3-quick
