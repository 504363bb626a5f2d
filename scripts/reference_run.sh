#!/usr/bin/env bash
# The exact commands that made the reference run shipped in models/reference/ (full preset, seed 0,
# objective competition: trained, fused and early-stopped for the AN2DL competition metric).
# Members and baseline train first; fusion and evaluation read their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e .
RUN=${RUN:-models/reference}
"$VENV/bin/ensemble" train --preset full --run "$RUN" --jobs 2 --seed 0 --objective competition
"$VENV/bin/ensemble" baseline --preset full --run "$RUN" --seed 0
"$VENV/bin/ensemble" fuse --run "$RUN" --strategy all --seed 0
