"""Time and peak memory of the analysis at 1,000 / 10,000 trials, and of a re-run after 100 more.

    .venv/bin/python -m scripts.bench.analysis_scale [--trials 1000 10000] [--keep DIR]

For each size: a results folder of the real layout (`results_folder`: the sim sweep's trials,
8 requests each, written through the real writer), then `analysis.report.report.write_report` in a
fresh process (so its peak memory is its own) with no cache, then 100 trials more written to
the folder and the report again, which reads only those from the trials and the rest from its
per-trial cache. Printed: wall time and peak memory of both, and the report's sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis.report.report import write_report
from analysis.report.sections import markdown_table
from scripts.bench.child import measure_in_child
from scripts.bench.results_folder import copy_of, point_of, scale_plan, templates
from sweep.core.results import ResultStore

ADDED = 100  # trials added before the re-run


def _report_here(results: str, out: str) -> dict:
    """The report of `results` in this process: wall time, peak memory, sizes."""
    started = time.perf_counter()
    paths = write_report(results, out)
    wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 1),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "html_mb": round(paths.report_html.stat().st_size / 2**20, 2),
        "md_lines": len(paths.report_md.read_text().splitlines()),
    }


def _report_in_child(results: Path, out: Path) -> dict:
    return measure_in_child(
        "scripts.bench.analysis_scale", str(results), str(out), what=f"the report of {results}"
    )


def measure(trials: int, root: Path) -> dict:
    """Write a folder of about `trials` trials, report it cold, add `ADDED`, report it again."""
    plan = scale_plan(trials, root)
    runs = templates(scale_plan(1, root))
    store = ResultStore(str(root), plan.name)
    for spec in plan.trials:
        store.write_trial(copy_of(runs[point_of(spec.label)], spec))
    results, out = Path(store.root), root / "report"
    files = [p for p in results.rglob("*") if p.is_file()]
    cold = _report_in_child(results, out)
    bigger = scale_plan(trials + ADDED, root)  # more repeats: the first new ones are added
    known = {t.trial_id for t in plan.trials}
    added = [t for t in bigger.trials if t.trial_id not in known][:ADDED]
    for spec in added:
        store.write_trial(copy_of(runs[point_of(spec.label)], spec))
    again = _report_in_child(results, out)
    return {
        "trials": len(plan.trials),
        "files": len(files),
        "on_disk_mb": round(sum(p.stat().st_size for p in files) / 2**20),
        "report_s": cold["wall_s"],
        "report_peak_mb": cold["peak_mb"],
        f"rerun_after_+{len(added)}_s": again["wall_s"],
        "rerun_peak_mb": again["peak_mb"],
        "report_html_mb": again["html_mb"],
        "report_md_lines": again["md_lines"],
    }


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.analysis_scale`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--keep", type=Path, help="write the folders here and keep them")
    return parser


def run(args: argparse.Namespace) -> None:
    """Measure every size asked and print the table."""
    rows = []
    for trials in args.trials:
        if args.keep:
            rows.append(measure(trials, args.keep / f"trials_{trials}"))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(trials, Path(tmp)))
    print(markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and not sys.argv[1].startswith("-"):  # a child: `_report_in_child`
        print(json.dumps(_report_here(sys.argv[1], sys.argv[2])))
    else:
        run(parser().parse_args())
