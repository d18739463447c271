#!/usr/bin/env bash
# Set up (first run only) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh engines
# The HTML report is checked in headless Chromium (Debian's package), installed once when root.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: chromium could not be installed; the HTML screenshot test will be skipped"
fi
# The layering contracts of docs/architecture.md (import-linter, configured in pyproject.toml).
layers=0
.venv/bin/lint-imports --no-cache | tail -n 3 || layers=$?
status=0
# Two tests at a time (pytest-xdist): much of the suite waits on servers and clusters starting.
# A test file is one unit of work (its module fixtures start once; tests/conftest.py), and a test
# marked `alone` runs with nothing beside it. SWEEP_TEST_WORKERS=0 runs everything in one process.
# The 25 slowest tests are printed at the end, so a test that grew slow is seen in CI's log.
workers=${SWEEP_TEST_WORKERS:-2}
# Test modules (pytest rewrites their asserts) and anything not compiled by setup.sh keep their
# bytecode between runs, which a machine-wide PYTHONDONTWRITEBYTECODE would forbid: a run whose
# test modules are already compiled collects in about 12 s a worker instead of 16.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m pytest -m "not gpu" -n "$workers" --dist loadscope --durations=25 "$@" \
  || status=$?
[ "$layers" = 0 ] || { echo "lint-imports: a layering contract is broken (see above)"; exit 1; }
exit "$status"
