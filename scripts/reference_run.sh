#!/usr/bin/env bash
# The exact command that makes the reference run shipped in models/reference/: the searched `full`
# preset (16 passes over the training tiles, warm-up + cosine to zero, flips only, budget-curve
# snapshots), seed 0, objective competition, members two at a time on 2 CPU cores, then the
# baseline, every fuser, and the evaluation with the budget curve. About 2 hours on 2 CPU cores;
# rerun the same command to continue a cut run (it resumes from latest.pt).
# (models/reference/ as committed before issue 14's new run was made at commit 03c7d7a by
#  train --preset full --jobs 2; baseline --preset full; fuse --strategy all, with the first recipe.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e .
RUN=${RUN:-models/reference}
"$VENV/bin/ensemble" run --preset full --run "$RUN" --jobs 2 --seed 0 --objective competition --curve
