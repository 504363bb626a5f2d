# Sourced by the scripts: make sure $VENV (default .venv) exists, made with Python 3.11 when present.
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  PY=$(command -v python3.11 || command -v python3)
  echo "creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
