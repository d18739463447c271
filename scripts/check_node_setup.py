#!/usr/bin/env python
"""Run each cluster YAML's node set-up on this CPU machine, as far as it can, and print a table.

    python scripts/check_node_setup.py                      # scripts/cluster/*.yaml
    python scripts/check_node_setup.py my-cluster.yaml --python python3.11

Each node type's steps run in order in a fresh venv (sweep/node_setup.py says what runs for real,
what as a dry run, and what is skipped). Exit status 1 when a core step fails: `ray up` would
then fail that node.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweep.node_setup import failed_required, node_plans, run_plan, table  # noqa: E402


def fresh_venv(python: str, folder: Path) -> Path:
    subprocess.run([python, "-m", "venv", str(folder)], check=True)
    venv_python = folder / "bin" / "python"
    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        check=True, capture_output=True,
    )  # fmt: skip
    return venv_python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--python", default="python3.11", help="the nodes' Python")
    args = parser.parse_args()
    configs = args.configs or sorted((REPO / "scripts" / "cluster").glob("*.yaml"))
    rows, done, failed = [], {}, False
    for path in configs:
        for node, steps in node_plans(yaml.safe_load(path.read_text())).items():
            key = tuple(s.command for s in steps)
            if key not in done:  # the same steps in another YAML: run once
                print(f"{path.name} {node}: {len(steps)} steps", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory(prefix="node-setup-") as folder:
                    python = fresh_venv(args.python, Path(folder) / "venv")
                    done[key] = run_plan(steps, python, REPO)
            rows += [(path.name, node, outcome) for outcome in done[key]]
            failed |= failed_required(done[key])
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
