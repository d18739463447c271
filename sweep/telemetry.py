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

from sweep import records as R
from sweep.loadgen.recorder import now_s

log = logging.getLogger(__name__)

Source = Callable[[], list[tuple[str, str, float]]]


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
    """Polls sources every `interval_s` on a daemon thread while the `with` block runs.

    A sample's time is taken when its poll starts; sources must answer fast (a slow source
    delays the others and skews the times), so scrapers keep their connection open.
    Sources with a `close` method are closed when the block ends.
    """

    def __init__(self, sources: list[Source], t0: float, interval_s: float = 0.1) -> None:
        self.sources = sources
        self.t0 = t0
        self.interval_s = interval_s
        self.rows: list[tuple[float, str, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll()  # one last sample so short trials still have a reading
        for source in self.sources:
            close = getattr(source, "close", None)  # e.g. a scrape's open connection
            if close is not None:
                close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def _poll(self) -> None:
        t = now_s() - self.t0
        for source in self.sources:
            try:
                samples = source()
            except Exception as exc:  # a flaky scrape must not fail the trial
                log.debug("telemetry source failed: %s", exc)
                continue
            self.rows.extend((t, s, m, float(v)) for s, m, v in samples)
