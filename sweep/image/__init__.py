"""The node image every cluster node runs.

`node_image` reads its Dockerfile's pieces; `node_setup` checks its pip steps on this machine
(`scripts/check_node_setup.py`).
"""
