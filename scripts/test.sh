#!/usr/bin/env bash
# Run the test suite; creates .venv and installs the package with its test extra on first use.
# Usage: bash scripts/test.sh [--fast] [extra pytest arguments]
#   --fast: only the tests that need no trained run and no long training (pytest -m "not slow")
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
tier=()
if [[ "${1:-}" == "--fast" ]]; then
    shift
    tier=(-m "not slow")
fi
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e ".[test,distributed]"
exec "$VENV/bin/python" -m pytest "${tier[@]}" "$@"
