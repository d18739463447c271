#!/usr/bin/env bash
# One optional piece of the node image's build (scripts/cluster/Dockerfile runs the source builds
# through it) or of a node's set-up: piece.sh NAME COMMAND [ARG...]
# Runs COMMAND. When it succeeds, NAME is recorded under ~/.llm-sweep/pieces (what this node can
# run; LLM_SWEEP_PIECES moves the folder: /opt/llm-sweep/pieces in the image); when it fails, one
# line says so and the script still exits 0, so that the image builds, or the node starts, without
# the piece instead of failing as a whole.
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: piece.sh NAME COMMAND [ARG...]" >&2
  exit 2
fi
name=$1
shift
dir="${LLM_SWEEP_PIECES:-$HOME/.llm-sweep/pieces}"
mkdir -p "$dir"
rm -f "$dir/$name"
if "$@"; then
  date -u +%Y-%m-%dT%H:%M:%SZ > "$dir/$name"
  echo "piece $name: installed"
else
  echo "piece $name: failed (exit $?); this node runs without it" >&2
fi
exit 0
