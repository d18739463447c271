#!/usr/bin/env bash
# Submit a sweep as a Ray job on the running cluster: the driver runs on the head node and joins
# the cluster (cluster=auto); the working directory ships with the job.
# Usage: scripts/submit_sweep.sh +experiment=NAME [overrides ...]
#   RAY_ADDRESS   the cluster's job endpoint (default http://127.0.0.1:8265, e.g. via `ray dashboard`)
#   OUTPUT_DIR    where results go (default results on the head node; an s3:// or gs:// URI works)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: scripts/submit_sweep.sh +experiment=NAME [overrides ...]" >&2
  exit 2
fi
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
output=${OUTPUT_DIR:-results}
exec ray job submit --address "$address" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "results", ".git", "wandb"]}' \
  -- python -m sweep "$@" cluster=auto "output.dir=$output"
