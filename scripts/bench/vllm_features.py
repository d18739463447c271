"""vLLM's CPU server on the tiny model: what cancelling frees, what enforcing a schema costs, and
what an agent's tool-calling session waits, each through `python -m sweep` as a user runs it.

One vLLM server (the project's own launcher, `backends.vllm_server`) with xgrammar's compact JSON,
the `pythonic` tool parser and cached-token usage; every measurement is a sweep of ours attached
to it (`backend=openai`), its figures read from the results folder:

- cancellation: half of 160 requests (concurrency 8, 96 tokens each) closed after N tokens; the
  server's running and waiting requests, sampled as every trial samples them (each second),
  against the client's in flight (`cancel_release_ms_mean`, `cancel_held_requests_max`), beside
  what the rest of an answer would have taken;
- structured outputs: the shipped `person` schema enforced and not, `--repeats` times each,
  order alternated: output tok/s, TPOT and the valid share;
- tool calls: agent sessions of 3 turns with `get_weather` named, then `required`: valid calls,
  time to a complete call, session time, cached input.

    .venv/bin/python -m scripts.bench.vllm_features [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from analysis.read.load import load_requests, load_summary
from analysis.report.sections import markdown_table
from backends.models.tiny import ensure_tiny_model
from backends.vllm_server import VLLMServerBackend, VLLMServerConfig
from sweep.core import records as R

SERVER_ARGS = {
    "structured-outputs-config": {"backend": "xgrammar", "disable_any_whitespace": True},
    "tool-call-parser": "pythonic",
    "enable-auto-tool-choice": True,
    "enable-prompt-tokens-details": True,
}
OUTPUT_LEN = 96
TPOT = R.latency_column("tpot", "median")


def sweep(url: str, out: Path, name: str, *overrides: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run `python -m sweep` attached to `url`; the results folder's summary and requests."""
    argv = [
        sys.executable, "-m", "sweep", f"sweep.name={name}", f"output.dir={out}",
        "backend=openai", f"backend.url={url}", "backend.extensions=true", "backend.num_gpus=0",
        "backend.server_kind=vllm",
        "workload.warmup_requests=0", f"workload.output_len={OUTPUT_LEN}", "tracking=none",
        *overrides,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return load_summary(out / name), load_requests(out / name)


def cancellation(url: str, out: Path) -> list[dict]:
    rows = []
    for after in (4, 32):
        summary, requests = sweep(
            url, out, f"cancel_{after}", "workload=closed_loop", "workload.concurrency=8",
            "workload.num_requests=160", "workload.cancel_rate=0.5", "workload.cancel_after=tokens",
            f"workload.cancel_after_tokens={after}", "workload.seed=0",
        )  # fmt: skip
        trial = summary.iloc[0]
        done = requests[~requests[R.CANCELLED].astype(bool) & (requests[R.STATUS] == R.STATUS_OK)]
        rest_ms = statistics.median(done[R.TPOT_S]) * (OUTPUT_LEN - after) * 1e3
        rows.append({
            "cut after (tokens)": after,
            "cancelled": int(trial[R.CANCELLED_REQUESTS]),
            "release mean (ms)": round(float(trial[R.CANCEL_RELEASE_MS_MEAN]), 1),
            "samples": int(trial[R.CANCEL_RELEASE_SAMPLES]),
            "held at most": int(trial[R.CANCEL_HELD_MAX]),
            "rest of an answer (ms)": round(rest_ms),
        })  # fmt: skip
    return rows


def structured(url: str, out: Path, repeats: int) -> list[dict]:
    runs: dict[bool, list[pd.Series]] = {True: [], False: []}
    for rep in range(repeats):
        for enforce in (True, False) if rep % 2 == 0 else (False, True):
            summary, _ = sweep(
                url, out, f"structured_{rep}_{enforce}", "workload=closed_loop",
                "workload.concurrency=4", "workload.num_requests=48", "dataset=prompts",
                "workload.structured=json_schema", f"workload.seed={rep}",
                f"workload.structured_enforce={str(enforce).lower()}",
            )  # fmt: skip
            runs[enforce].append(summary.iloc[0])
    rows = []
    for enforce, trials in runs.items():
        tok_s = [t[R.OUTPUT_THROUGHPUT] for t in trials]
        valid = statistics.mean(t[R.STRUCTURED_VALID_FRACTION] for t in trials)
        rows.append({
            "schema": "enforced" if enforce else "not enforced",
            "runs": len(trials),
            "output tok/s (each)": ", ".join(f"{v:.1f}" for v in tok_s),
            "output tok/s (mean)": round(statistics.mean(tok_s), 1),
            "TPOT p50 (ms, mean)": round(statistics.mean(t[TPOT] for t in trials), 1),
            "valid (%)": round(100 * valid),
        })  # fmt: skip
    return rows


def tools(url: str, out: Path) -> list[dict]:
    rows = []
    for choice in ("get_weather", "required"):
        summary, requests = sweep(
            url, out, f"tools_{choice}", "backend.api=chat", "dataset=multi_turn",
            "dataset.num_turns=3", "dataset.user_len=128", "dataset.tools=agent",
            f"dataset.tool_choice={choice}", "dataset.tool_latency_s=0.05",
            "workload=closed_loop", "workload.concurrency=2", "workload.num_requests=24",
        )  # fmt: skip
        trial = summary.iloc[0]
        rows.append({
            "tool_choice": choice,
            "sessions": int(trial[R.SESSIONS]),
            "calls": int(trial[R.TOOL_CALLS_TOTAL]),
            "valid (%)": round(100 * float(trial[R.TOOL_ARGS_VALID_FRACTION])),
            "call complete p50 (ms)": round(float(trial[R.TOOL_CALL_MS_P50])),
            "session p50 (s)": round(float(trial[R.SESSION_S_P50]), 2),
            "cached input (%)": round(float(trial[R.CACHED_INPUT_PERCENT]), 1),
            "prompts counted as vLLM did": bool(
                (requests[R.INPUT_TOKENS] == requests[R.SERVER_INPUT_TOKENS]).all()
            ),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="structured runs of each kind")
    args = parser.parse_args(argv)
    config = VLLMServerConfig(num_gpus=0, dtype="fp32", extra_args=SERVER_ARGS)
    backend = VLLMServerBackend(config, str(ensure_tiny_model()))
    backend.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            url = backend.base_url
            print("## Cancellation\n\n" + markdown_table(pd.DataFrame(cancellation(url, out))))
            table = pd.DataFrame(structured(url, out, args.repeats))
            print("\n## Structured outputs\n\n" + markdown_table(table))
            print("\n## Tool-calling sessions\n\n" + markdown_table(pd.DataFrame(tools(url, out))))
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
