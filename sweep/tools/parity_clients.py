"""One round of each client of the parity check, read back as a `Round`.

Ours through `python -m sweep` (the user's path, with the Ray it starts) or
`sweep.worker.trial.run_trial` called in this process; vLLM's client (`vllm.benchmarks.serve`) in a
process of its own, so that it is confined like ours and shares nothing with the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from analysis.read.load import load_requests, load_summary
from sweep.core import records as R
from sweep.datasets.cache import PromptSource
from sweep.tools import REPO
from sweep.tools.parity_report import Round
from sweep.tools.parity_workload import vllm_dataset
from sweep.tools.process_watch import run_child
from sweep.worker.trial import run_trial

# vLLM's client in a process of its own, so that it is confined like ours and shares nothing
# with this script.
VLLM_CLIENT = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def measured(summary: dict[str, Any], requests: Any, where: str) -> tuple[float, list[float]]:
    """Output tok/s and each measured request's TTFT (ms) of one trial's summary and requests."""
    if summary[R.TRIAL_STATUS] != R.STATUS_OK:
        raise SystemExit(f"{where}: trial failed: {summary[R.ERROR_MESSAGE]}")
    failed = requests[requests[R.STATUS] != R.STATUS_OK]
    if not failed.empty:
        raise SystemExit(f"{where}: {len(failed)} requests failed, e.g. {failed[R.ERROR].iloc[0]}")
    in_window = requests[requests[R.IN_WINDOW]]
    return summary[R.OUTPUT_THROUGHPUT], list(in_window[R.TTFT_S] * 1e3)


def trust_note(summary: dict[str, Any]) -> str:
    """The trial's own view of its client: CPU, saturation flag, the worker's niceness."""
    note = f"client CPU {summary.get(R.CLIENT_CPU_PERCENT) or 0:.0f}%"
    if summary.get(R.CLIENT_SATURATED):
        note += ", FLAGGED client saturated"
    nice = summary.get(R.ENV_WORKER_NICE)
    return note + ("" if nice is None or nice != nice else f", worker nice {nice:g}")


def ours_sweep(overrides: list[str], results: Path, name: str, args) -> Round:
    """One round through `python -m sweep`: a new sweep `name`, read back from its Parquet."""
    argv = [sys.executable, "-m", "sweep", *overrides, f"sweep.name={name}",
            f"output.dir={results}"]  # fmt: skip
    confined = os.sched_getaffinity(0)
    if args.isolate:  # the sweep places its own processes: the load generator on the last core
        argv.append("cluster.isolate_client=on")
        os.sched_setaffinity(0, (args.server_cpus or set()) | (args.client_cpus or confined))
    try:
        wall_s, watch = run_child("python -m sweep", argv, results / f"{name}.log", REPO)
    finally:
        os.sched_setaffinity(0, confined)
    (summary,) = load_summary(results / name).to_dict("records")  # one trial per sweep
    tok_s, ttfts = measured(summary, load_requests(results / name), f"sweep {name}")
    note = f"python -m sweep {wall_s:.0f} s, {trust_note(summary)}; "
    return Round(tok_s, ttfts, note + watch.summary(args.client_cpus))


def ours_direct(backend, prompts: PromptSource, spec) -> Round:
    """One round of `sweep.worker.trial.run_trial` in this process."""
    files = run_trial(backend, prompts, spec, {})
    summary = files.summary.to_pylist()[0]
    tok_s, ttfts = measured(summary, files.requests.to_pandas(), "direct trial")
    return Round(tok_s, ttfts, trust_note(summary))


def theirs(server, args: argparse.Namespace, results: Path, name: str, seed: int) -> Round:
    """One round of vLLM's client in a subprocess; every request's TTFT from its result file."""
    argv = [
        sys.executable, "-c", VLLM_CLIENT,
        "--backend", "openai",
        "--base-url", server.base_url,
        "--model", server.served_model,
        "--tokenizer", server.model_path,
        *vllm_dataset(args, results, seed),
        "--num-prompts", str(args.prompts),
        "--request-rate", str(args.rate),
        "--max-concurrency", str(args.concurrency),
        "--ignore-eos",
        "--temperature", str(args.temperature),
        "--seed", str(seed),
        "--disable-tqdm",
        "--save-result", "--save-detailed",  # keeps every request's TTFT in the result
        "--result-dir", str(results),
        "--result-filename", f"{name}.json",
    ]  # fmt: skip
    wall_s, watch = run_child("vllm bench", argv, results / f"{name}.log", REPO)
    result = json.loads((results / f"{name}.json").read_text())
    if result["completed"] != args.prompts:
        raise SystemExit(f"vllm bench {name}: {result['failed']} requests failed")
    note = f"client {wall_s:.0f} s; " + watch.summary(args.client_cpus)
    return Round(result["output_throughput"], [t * 1e3 for t in result["ttfts"]], note)
