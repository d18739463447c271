"""Small builders shared by the load-generator and sim tests, and the recorded fixtures."""

from pathlib import Path

from backends.base import GenRequest
from sweep.core.config import WorkloadConfig

FIXTURES = Path(__file__).parent / "fixtures"  # real bytes recorded from real servers


def make_requests(count, max_tokens, prompt="hello world"):
    return [GenRequest(i, prompt, (1, 2), max_tokens) for i in range(count)]


def workload(name="closed_loop", **values):
    values.setdefault("warmup_requests", 0)
    return WorkloadConfig(name=name, **values)
