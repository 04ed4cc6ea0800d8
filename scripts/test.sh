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
# The report test drives Debian's chromium headless; install it when we can (root + apt), else that test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "note: chromium could not be installed; the browser test will skip"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export ANOMALY_CLUSTERING_OFFLINE=1 HF_HUB_OFFLINE=1  # never download weights in the tests
python -m pytest -q "$@"
