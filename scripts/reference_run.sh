#!/usr/bin/env bash
# The commands that make the reference run shipped in models/reference/, from scratch: the searched
# `full` preset (16 passes over the training tiles, warm-up + cosine to zero, flips and random degradations
# of the image on 60 % of the tiles as ensemble/core/augment.py: RECIPE, budget-curve snapshots), seed 0,
# objective competition, on 2 CPU cores:
#   1. the five members, two at a time (`ensemble train --jobs 2`);
#   2. the baseline and its replica (another seed: the baseline_pair rows), one after the other;
#   3. the student: the baseline's network distilled from `vote` (the members' and the baseline's softmax
#      averaged, nothing fitted on the validation tiles: docs/experiments.md#distillation-which-teacher),
#      16 epochs;
#   4. the ensembling control (five width-8 multiclass nets);
#   5. every fuser and the evaluation: the budget curve, then the member ablation, the flip-TTA gain and
#      the robustness benchmark.
# About 9 hours on 2 shared CPU cores (the members 3, the two baselines 2, the student and the control
# 1.2 and 2, the evaluation 1). Rerun the same command to continue a cut run: finished networks are
# skipped, an unfinished one resumes from its latest.pt.
# models/reference/ is RUN=runs/reference shipped by `python scripts/ship_run.py` (checked, then copied without
# the files .gitignore keeps out of models/: latest.pt, snapshots/, cache/, logs/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e .
RUN=${RUN:-runs/reference}
E="$VENV/bin/ensemble"
"$E" train --preset full --run "$RUN" --jobs 2 --seed 0 --objective competition
"$E" baseline --preset full --run "$RUN" --replicas 2 --jobs 1 --seed 0 --objective competition  # one at a time on 2 threads: about 250 s an epoch against 800 s for each of two at once on one thread
"$E" fuse --run "$RUN" --strategy vote --seed 0  # the teacher's fuser (nothing fitted)
"$E" distill --preset full --run "$RUN" --teacher vote --seed 0
"$E" control --preset full --run "$RUN" --seed 0 --objective competition
"$E" fuse --run "$RUN" --strategy all --seed 0
# the evaluation in two commands, each short enough for one sitting: the budget curve first (kept in
# RUN/evaluation/budget_curve.json, so a rerun skips it), then the rest with that curve reused
[ -f "$RUN/evaluation/budget_curve.json" ] || "$E" evaluate --run "$RUN" --curve --seed 0
"$E" evaluate --run "$RUN" --curve-from "$RUN/evaluation/budget_curve.json" --ablation --tta-gain --robustness --seed 0
