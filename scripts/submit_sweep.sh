#!/usr/bin/env bash
# Submit a sweep as a Ray job on the running cluster: the driver runs on the head node and joins
# the cluster (cluster=auto); the working directory ships with the job.
# Usage: scripts/submit_sweep.sh +experiment=NAME [overrides ...]
#   RAY_ADDRESS   the cluster's job endpoint (default http://127.0.0.1:8265, e.g. via `ray dashboard`)
#   OUTPUT_DIR    where results go on the head node (default ~/llm-sweep-results, the same folder
#                 for every submission, so a resubmitted sweep resumes; an s3:// or gs:// URI works)
#   FORWARD_ENV   more variable names to hand to the job (HF_TOKEN and WANDB_API_KEY always are,
#                 when set); values travel in a private runtime-env file, never on a command line
# Fetch the results afterwards: ray rsync-down CONFIG '~/llm-sweep-results/' results/
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: scripts/submit_sweep.sh +experiment=NAME [overrides ...]" >&2
  exit 2
fi
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
output=${OUTPUT_DIR:-'~/llm-sweep-results'}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python

runtime_env=$(mktemp "${TMPDIR:-/tmp}/llm-sweep-runtime-env.XXXXXX")
trap 'rm -f "$runtime_env"' EXIT
chmod 600 "$runtime_env"
# The runtime environment: what to leave out of the uploaded code, and the secrets to forward.
FORWARD="HF_TOKEN WANDB_API_KEY ${FORWARD_ENV:-}" "$PY" - "$runtime_env" <<'PYTHON'
import json, os, sys
names = [n for n in os.environ["FORWARD"].split() if n]
env = {n: os.environ[n] for n in dict.fromkeys(names) if os.environ.get(n)}
spec = {"excludes": [".venv", "results", ".git", "wandb"], "env_vars": env}
with open(sys.argv[1], "w") as f:
    json.dump(spec, f)
print("forwarding to the job: " + (", ".join(env) or "no secrets"), file=sys.stderr)
PYTHON
ray job submit --address "$address" --working-dir . --runtime-env "$runtime_env" \
  -- python -m sweep "$@" cluster=auto "output.dir='$output'"  # quoted: Hydra reads ~ as a value
