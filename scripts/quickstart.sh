#!/usr/bin/env bash
# The main job end to end: install (first time), train the members and the multiclass baseline,
# fuse every strategy, evaluate and print the per-class IoU table.
# Usage: bash scripts/quickstart.sh [--preset quick|full] [--data PATH] [--run RUN] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e .
exec "$VENV/bin/ensemble" run "$@"
