#!/usr/bin/env bash
# Create (or reuse) .venv, install the package with its test extras, and run the test suite (CPU only, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel >/dev/null
python -m pip install -q -e ".[test]"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python -m pytest -q "$@"
