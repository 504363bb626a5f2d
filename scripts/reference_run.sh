#!/usr/bin/env bash
# The commands that make the reference run shipped in models/reference/, from scratch: the searched
# `full` preset (16 passes over the training tiles, warm-up + cosine to zero, flips and random degradations
# of the image on 60 % of the tiles as ensemble/core/augment.py: RECIPE, budget-curve snapshots), seed 0,
# objective competition, on 2 CPU cores:
#   1. the five members, two at a time, then the baseline, every member-level fuser and the evaluation
#      with the budget curve (`ensemble run`, about 2 hours);
#   2. the baseline's replica (another seed: the baseline_pair rows, about 50 minutes) and the ensembling
#      control (five width-8 multiclass nets, about 65 minutes);
#   3. the student: the baseline's network distilled from `vote` (the members' and the baseline's softmax
#      averaged, nothing fitted on the validation tiles: docs/experiments.md#distillation-which-teacher),
#      16 epochs, about 70 minutes;
#   4. every fuser (the ones over several networks included) and the evaluation with the budget curve,
#      the member ablation, the flip-TTA gain and the robustness benchmark.
# Rerun the same command to continue a cut run (every network resumes from its latest.pt).
# models/reference/ is RUN=runs/reference copied without the files .gitignore keeps out (latest.pt,
# snapshots/, cache/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e .
RUN=${RUN:-runs/reference}
E="$VENV/bin/ensemble"
"$E" run --preset full --run "$RUN" --jobs 2 --seed 0 --objective competition --curve
"$E" baseline --preset full --run "$RUN" --replicas 2 --seed 0 --objective competition
"$E" control --preset full --run "$RUN" --seed 0 --objective competition
"$E" distill --preset full --run "$RUN" --teacher vote --seed 0
"$E" fuse --run "$RUN" --strategy all --seed 0
"$E" evaluate --run "$RUN" --curve --ablation --tta-gain --robustness --seed 0
