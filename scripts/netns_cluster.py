"""A Ray cluster of network namespaces on one machine.

    sudo .venv/bin/python scripts/netns_cluster.py up|down|status [--workers 2] [--gpus 2]

The cluster itself: `sweep.tools.netns_cluster`.
"""

from sweep.tools import netns_cluster

if __name__ == "__main__":
    raise SystemExit(netns_cluster.run_action(netns_cluster.parser().parse_args()))
