#!/usr/bin/env bash
# The exact command that makes the reference run shipped in models/reference/: the searched `full`
# preset (16 passes over the training tiles, warm-up + cosine to zero, flips only, budget-curve
# snapshots), seed 0, objective competition, members two at a time on 2 CPU cores, then the
# baseline, every fuser, and the evaluation with the budget curve. About 2 hours on 2 CPU cores;
# rerun the same command to continue a cut run (it resumes from latest.pt).
# models/reference/ was made by this script with RUN=runs/reference (1 h 56 min on 2 idle CPU cores), then
# copied over models/reference/ without the files .gitignore keeps out (latest.pt, snapshots/, cache/) and
# without the cache entries an older version had recorded in manifest.json; its evaluation was rerun with
# `ensemble evaluate --run runs/reference --curve --seed 0` after the budget curve learnt to count tiles seen
# when an epoch is every training tile (same scores, one column more).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e .
RUN=${RUN:-models/reference}
"$VENV/bin/ensemble" run --preset full --run "$RUN" --jobs 2 --seed 0 --objective competition --curve
