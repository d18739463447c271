#!/usr/bin/env python
"""Check the node image's pip steps on this CPU machine, as far as it can, and print a table.

    python scripts/check_node_setup.py                       # scripts/cluster/Dockerfile
    python scripts/check_node_setup.py my.Dockerfile --python python3.11

A resolver run of the image's wheels for its Python and platform, torch's CUDA major against the
base images', the optional pieces' sources on the index, then the steps installed for real in a
fresh venv of `--python` with a CPU torch: `sweep.image.node_setup`. Exit status 1 when a core step
fails: the image build would fail there. It takes a few minutes and the package index.
"""

import argparse
import sys
from pathlib import Path

from sweep.image.node_setup import check_image

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dockerfile", nargs="?", type=Path,
                        default=REPO / "scripts" / "cluster" / "Dockerfile")  # fmt: skip
    parser.add_argument("--python", default="python3.11", help="the Python of the fresh venv")
    args = parser.parse_args()
    text, failed = check_image(args.dockerfile, args.python, REPO)
    print(text)
    sys.exit(1 if failed else 0)
