#!/usr/bin/env bash
# A newcomer's first session, step by step with wall times, in a fresh clone: the README's two commands,
# then the verbs with their defaults, a submission, the notebook predictor, and `git status` clean.
#
# Usage: bash scripts/new_user_session.sh CLONE [DATA]
#   CLONE  a fresh clone of the project (its .venv is made by the README's commands, or $VENV if set)
#   DATA   the data file (default: what the project finds by itself)
# Environment (each default: none, the session as the README runs it): TRAIN_ARGS (extra options for every
# training command), QUICKSTART_ARGS (for the quickstart; default TRAIN_ARGS), EVALUATE_ARGS (for evaluate)
# and TEST_ARGS (pytest arguments for the test command; none: the whole suite).
set -euo pipefail
clone=$(cd "$1" && pwd)
data=${2:+--data $2}
cd "$clone"
export PYTHONUNBUFFERED=1

step() {  # step NAME COMMAND...: run it, then say how long it took on stderr
    local name=$1 started elapsed
    shift
    started=$(date +%s%N)
    "$@"
    elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
    printf 'session step: %s: %d.%03d s\n' "$name" $((elapsed / 1000)) $((elapsed % 1000)) >&2
}

# shellcheck disable=SC2086  # TRAIN_ARGS, TEST_ARGS and data are lists of words
{
step "quickstart" bash scripts/quickstart.sh $data ${QUICKSTART_ARGS:-${TRAIN_ARGS:-}}
step "tests" bash scripts/test.sh ${TEST_ARGS:-}
source "${VENV:-.venv}/bin/activate"
step "train" ensemble train $data ${TRAIN_ARGS:-}
step "baseline" ensemble baseline $data ${TRAIN_ARGS:-}
step "fuse" ensemble fuse $data
step "evaluate" ensemble evaluate $data ${EVALUATE_ARGS:-}
step "predict" ensemble predict $data --out s.csv
step "api.predictor" python -c "
import numpy as np
from ensemble import api
from ensemble.core.data import load_data
x = load_data(${2:+'$2'}).test_images[:4]
masks = api.predictor().predict(x)
assert masks.shape == x.shape, masks.shape
print('api.predictor().predict(x):', masks.shape, masks.dtype)
"
}
changed=$(git status --porcelain)
if [ -n "$changed" ]; then
    echo "session left changes in the clone:" >&2
    echo "$changed" >&2
    exit 1
fi
echo "session: git status clean" >&2
