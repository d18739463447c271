"""How fast a published trace's prompts are built, cold and from the prompt cache.

Builds the prompts of the first `--rows` rows of a trace (`mooncake_conversation` by default,
its full lengths: no context limit) with the tiny model's tokenizer, as a trial does
(`sweep.datasets.cache.PromptSource`): once cold (the cache entry removed first, the tokenizer
loaded before the clock starts), then again from the cache by a fresh source (no tokenizer).
Prints one table: rows, input tokens, seconds and rows per second, cold and cached.

    .venv/bin/python -m scripts.bench.trace_build [--trace mooncake_conversation] [--rows 1000]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from analysis.report.sections import markdown_table
from backends.models.cache import entry_path
from backends.models.tiny import ensure_tiny_model
from sweep.core.config import TraceDatasetConfig
from sweep.datasets.cache import CACHE_KIND, PromptSource


def source(model: str) -> PromptSource:
    """A prompt source of the tiny model's tokenizer, without a context limit."""
    return PromptSource(model, None, False, context=None)


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.trace_build`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="mooncake_conversation", help="a trace name or file")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--block-size", type=int, default=512)
    return parser


def run(args: argparse.Namespace) -> None:
    """Build cold, then cached; print the table."""
    model = str(ensure_tiny_model())
    cfg = TraceDatasetConfig(path=args.trace, block_size=args.block_size)
    cold = source(model)
    key = cold.key(cfg, args.rows)
    if key is not None:
        entry_path(CACHE_KIND, key).unlink(missing_ok=True)
    cold.tokenizer()  # loaded before the clock: the build is what is timed
    rows = []
    for label, made in (("cold", cold), ("cached", source(model))):
        start = time.perf_counter()
        prompts = made.prompts(cfg, args.rows)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "build": label,
                "rows": len(prompts),
                "input tokens": sum(p.input_tokens for p in prompts),
                "seconds": round(seconds, 2),
                "rows/s": round(len(prompts) / seconds, 1),
            }
        )
    print(markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    run(parser().parse_args())
