"""Cut the test slices of the published traces into tests/fixtures/traces/.

    .venv/bin/python scripts/make_trace_fixtures.py [--rows 300] [--out DIR]

The tool itself: `sweep.tools.trace_fixtures`.
"""

from sweep.tools import trace_fixtures

if __name__ == "__main__":
    trace_fixtures.run(trace_fixtures.parser().parse_args())
