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
# Two passes. First two workers (pytest-xdist): much of the suite waits on servers and clusters
# starting. A test file is one group (`--dist loadgroup`; tests/conftest.py names the folders and
# files that share a fixture and run as one group). Then, in one process, the tests marked
# `timing`, which assert a time or a CPU share: nothing runs beside them.
# SWEEP_TEST_WORKERS=0 runs the first pass in one process too. The 25 slowest tests of each pass
# are printed at its end, so a test that grew slow is seen in CI's log.
workers=${SWEEP_TEST_WORKERS:-2}
# Test modules (pytest rewrites their asserts) and anything not compiled by setup.sh keep their
# bytecode between runs, which a machine-wide PYTHONDONTWRITEBYTECODE would forbid: a run whose
# test modules are already compiled collects in about 12 s a worker instead of 16.
unset PYTHONDONTWRITEBYTECODE
parallel=0 serial=0
.venv/bin/python -m pytest -m "not gpu and not timing" -n "$workers" --dist loadgroup \
  --durations=25 "$@" || parallel=$?
.venv/bin/python -m pytest -m "timing and not gpu" -p no:xdist --durations=25 "$@" || serial=$?
# 5: no test selected in that pass (arguments naming a few tests); both: none at all.
for code in "$parallel" "$serial"; do [ "$code" = 0 ] || [ "$code" = 5 ] || status=$code; done
[ "$parallel" = 5 ] && [ "$serial" = 5 ] && status=5
[ "$layers" = 0 ] || { echo "lint-imports: a layering contract is broken (see above)"; exit 1; }
exit "$status"
