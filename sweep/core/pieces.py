"""Optional pieces of a node's set-up: what a GPU deployment needs beyond the core install.

Some engines need a source build that may fail on a node without failing it
(`scripts/cluster/piece.sh`: flash-attn, arctic-inference, CUDA llama.cpp) or a facility the
shipped images lack (docker, for launching TGI). A cluster's node types declare the pieces they
install as Ray resources named `PIECE_PREFIX + name`; a GPU deployment of a joined cluster asks
for the pieces its backend names (`Backend.pieces`), so it lands only on such nodes and is
refused before the night starts where no node type has them. On the node, `piece.sh` leaves a
marker per piece that installed (`pieces_dir`): a deployment whose piece failed to build there
fails at once with that reason instead of deep in its engine.
"""

from __future__ import annotations

import os
from pathlib import Path

PIECE_PREFIX = "piece:"
PIECES_ENV = "LLM_SWEEP_PIECES"  # where piece.sh keeps its markers (default ~/.llm-sweep/pieces)


def pieces_dir() -> Path:
    """The folder of the markers `piece.sh` writes on this node."""
    return Path(os.environ.get(PIECES_ENV) or Path.home() / ".llm-sweep" / "pieces")


def missing_here(names: tuple[str, ...]) -> list[str]:
    """The pieces of `names` this node's set-up tried and failed to install.

    A node not set up by `piece.sh` (no marker folder: a local machine, a custom image) is
    trusted to have what it declares.
    """
    folder = pieces_dir()
    if not folder.is_dir():
        return []
    return [name for name in names if not (folder / name).is_file()]
