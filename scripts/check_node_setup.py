#!/usr/bin/env python
"""Run each `ray up` YAML's node set-up on this CPU machine, as far as it can, and print a table.

    python scripts/check_node_setup.py                      # scripts/cluster/l4-*.yaml
    python scripts/check_node_setup.py my-cluster.yaml --python python3.11

What runs for real, what as a dry run and what is skipped: `sweep.node_setup`. Exit status 1
when a core step fails: `ray up` would then fail that node. (The KubeRay manifest runs the same
steps as the `ray up` YAMLs; tests/cluster/test_kuberay.py keeps them equal.)
"""

import argparse
import sys
from pathlib import Path

from sweep.node_setup import check_configs

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--python", default="python3.11", help="the nodes' Python")
    args = parser.parse_args()
    configs = args.configs or sorted((REPO / "scripts" / "cluster").glob("l4-*.yaml"))
    text, failed = check_configs(configs, args.python, REPO)
    print(text)
    sys.exit(1 if failed else 0)
