"""The project's own benchmarks: the evidence behind docs/benchmarks.md, outside the installed
package. Each module is one benchmark, run from the checkout's root as
`.venv/bin/python -m scripts.bench.NAME [options]` (`--help` lists them), or what several share
(`results_folder`, `child`, `start_probe`, `send_bursts`). They may import the product
(`sweep`, `backends`, `analysis`, and its user tools in `sweep.tools`); nothing there imports them.
"""
