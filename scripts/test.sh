#!/usr/bin/env bash
# Run the test suite; creates .venv and installs the package with its test extra on first use.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
source scripts/venv.sh
"$VENV/bin/python" -m pip install -q -e ".[test,distributed]"
exec "$VENV/bin/python" -m pytest "$@"
