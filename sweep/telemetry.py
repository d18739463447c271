"""Background sampling of resource use during a trial, into timeseries rows.

Always samples the worker process tree (RSS, CPU); samples GPUs through NVML when nvidia-ml-py
and a GPU are present; polls any extra sources a backend offers (e.g. a server's /metrics).
Timestamps come from the project's one clock, relative to the trial's start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psutil

from sweep.core import records as R
from sweep.loadgen.clock import now_s

log = logging.getLogger(__name__)

Source = Callable[[], list[tuple[str, str, float]]]

# Seconds between polls: GPUs at 10 Hz (NVML calls are cheap and release the GIL); the process
# tree and a server's /metrics cost this process (and the server, which renders the metrics)
# more, and that cost lands on the measurement.
GPU_INTERVAL_S = 0.1
PROCESS_INTERVAL_S = 1.0
SERVER_INTERVAL_S = 1.0


def process_source() -> Source:
    """RSS (MiB) and CPU percent of this process and its children."""
    me = psutil.Process()

    def sample() -> list[tuple[str, str, float]]:
        procs = [me, *me.children(recursive=True)]
        rss = cpu = 0.0
        for proc in procs:
            try:
                rss += proc.memory_info().rss
                cpu += proc.cpu_percent(None)
            except psutil.Error:
                continue
        return [("process", R.PROCESS_RSS_MB, rss / 2**20), ("process", R.PROCESS_CPU_PERCENT, cpu)]

    return sample


def nvml_source() -> Source | None:
    """GPU memory, utilisation and power of the GPUs visible to this task, or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in _visible_gpu_indices(pynvml)]
    except Exception:  # no library, no driver or no GPU: not an error on CPU machines
        return None
    if not handles:
        return None

    def sample() -> list[tuple[str, str, float]]:
        rows = []
        for i, handle in enumerate(handles):
            source = f"gpu{i}"
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            rows.append((source, R.GPU_MEMORY_USED_MB, mem.used / 2**20))
            rows.append((source, R.GPU_UTILIZATION_PERCENT, float(util.gpu)))
            rows.append((source, R.GPU_POWER_W, pynvml.nvmlDeviceGetPowerUsage(handle) / 1000))
        return rows

    return sample


def _visible_gpu_indices(pynvml: object) -> list[int]:
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(pynvml.nvmlDeviceGetCount()))
    return [int(v) for v in visible.split(",") if v.strip().isdigit()]


class Sampler:
    """Polls each source at its own interval on a daemon thread while the `with` block runs.

    `sources` pairs each source with its interval in seconds. A sample's time is taken when its
    poll starts. The sampler shares the process (and its GIL) with the load generator, so what
    it does delays token reads: against vLLM's own benchmark client on one CPU vLLM server,
    polling the process tree and /metrics ten times a second put our median first-token time
    at 73-89 ms against its 10-17 ms; at the intervals below (and with only the mapped lines
    of /metrics parsed) ours was 15-16 ms. Only cheap sources (NVML) run fast.
    Sources with a `close` method are closed when the block ends.
    """

    def __init__(self, sources: list[tuple[Source, float]], t0: float) -> None:
        self.sources = sources
        self.t0 = t0
        self.rows: list[tuple[float, str, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll([source for source, _ in self.sources])  # short trials still get a reading
        for source, _ in self.sources:
            close = getattr(source, "close", None)  # e.g. a scrape's open connection
            if close is not None:
                close()

    def _run(self) -> None:
        due = [now_s() + interval for _, interval in self.sources]
        while self.sources and not self._stop.wait(max(0.0, min(due) - now_s())):
            now = now_s()
            ready = [i for i, at in enumerate(due) if at <= now]
            self._poll([self.sources[i][0] for i in ready])
            for i in ready:
                due[i] = max(due[i] + self.sources[i][1], now)  # no burst after a stall

    def _poll(self, sources: list[Source]) -> None:
        t = now_s() - self.t0
        for source in sources:
            try:
                samples = source()
            except Exception as exc:  # a flaky scrape must not fail the trial
                log.debug("telemetry source failed: %s", exc)
                continue
            self.rows.extend((t, s, m, float(v)) for s, m, v in samples)
