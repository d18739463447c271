"""Write the two request traces shipped in `sweep/data/traces/`.

    .venv/bin/python scripts/make_traces.py [OUT_DIR]   # default: sweep/data/traces

The generators of both traces: `sweep.tools.shipped_traces`.
"""

import sys
from pathlib import Path

from sweep.tools import shipped_traces

if __name__ == "__main__":
    shipped_traces.write_traces(Path(sys.argv[1]) if len(sys.argv) > 1 else shipped_traces.OUT)
