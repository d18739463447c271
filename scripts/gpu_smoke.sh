#!/usr/bin/env bash
# The first checks on a real GPU machine, in order, as a pass / fail table (sweep.tools.gpu_smoke).
# Usage: scripts/gpu_smoke.sh [--hardware l4] [--cluster-address HOST:PORT] [--results-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" -c 'import sys; from sweep.tools import gpu_smoke as g; sys.exit(g.run(g.parser().parse_args()))' "$@"
