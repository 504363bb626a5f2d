#!/usr/bin/env bash
# Lint with ruff, type-check the public surface with mypy, then run the test suite; creates .venv and installs the package with its test extra on first use.
# Usage: bash scripts/test.sh [--fast] [extra pytest arguments]
#   --fast: only the tests that need no trained run and no long training (pytest -m "not slow")
# The tests run single-threaded, one pytest-xdist worker per core (TEST_WORKERS=N to change, 0 for none),
# each test file on one worker so its fixtures are built once, the longest files first (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
tier=()
if [[ "${1:-}" == "--fast" ]]; then
    shift
    tier=(-m "not slow")
fi
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e ".[test,distributed,tensorboard]"
"$VENV/bin/python" -m ruff check --quiet .  # lint first (ruff.toml): a finding fails the run before the tests
"$VENV/bin/python" -m mypy  # then the types of the public surface (mypy.ini)
exec "$VENV/bin/python" -m pytest -n "${TEST_WORKERS:-auto}" --dist loadfile --no-loadscope-reorder "${tier[@]}" "$@"
