#!/usr/bin/env bash
# Set up (first run only) and run the quickstart sweep on local Ray with the tiny generated model.
# Extra arguments are passed to the sweep, e.g. scripts/quickstart.sh sweep.overwrite=true
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m sweep +experiment=quickstart "$@"
