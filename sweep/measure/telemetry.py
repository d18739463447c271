"""Background sampling of resource use during a trial, into timeseries rows; the server's view.

Always samples the worker process tree (RSS, CPU); samples GPUs through NVML when nvidia-ml-py
and a GPU are present (those of `CUDA_VISIBLE_DEVICES`, in CUDA's order; `check_gpu_memory`
tells apart cards Ray labels alike), their energy counter included where they keep one; polls
any extra sources a backend offers (e.g. a server's /metrics).
`ServerCapture` reads a server's whole /metrics at the trial's start and end and hands on the
table of every series with its delta (`records.SERVER_METRICS_SCHEMA`).
Timestamps come from the project's one clock, relative to the trial's start.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pyarrow as pa

from backends.process.prometheus import Scrape, ScrapeError, Snapshot
from sweep.core import records as R
from sweep.core.errors import BackendError
from sweep.core.secrets import scrub_text
from sweep.loadgen.clock import now_s

log = logging.getLogger(__name__)

Source = Callable[[], list[tuple[str, str, float]]]

# Seconds between polls: GPUs at 10 Hz (NVML calls are cheap and release the GIL); the process
# tree and a server's /metrics cost this process (and the server, which renders the metrics)
# more, and that cost lands on the measurement.
GPU_INTERVAL_S = 0.1
PROCESS_INTERVAL_S = 1.0
SERVER_INTERVAL_S = 1.0
TREE_REFRESH_S = 10.0


def process_source(refresh_s: float = TREE_REFRESH_S) -> Source:
    """RSS (MiB) and CPU percent of this process and its children (a launched server's tree).

    The tree is walked at most every `refresh_s` (a walk reads every process of the node: 2.7 ms
    with 78 processes, in the load generator's process); between walks, the processes found are
    read. Each process keeps its `psutil.Process`, whose `cpu_percent` is the use since the last
    poll: one made anew each poll reads 0.
    """
    me = psutil.Process()
    tree: dict[int, psutil.Process] = {}
    walked = [-math.inf]

    def sample() -> list[tuple[str, str, float]]:
        if now_s() - walked[0] >= refresh_s:
            found = {p.pid: p for p in [me, *me.children(recursive=True)]}
            for pid in tree.keys() - found.keys():
                del tree[pid]
            for pid in found.keys() - tree.keys():
                tree[pid] = found[pid]
            walked[0] = now_s()
        rss = cpu = 0.0
        for proc in list(tree.values()):
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += proc.cpu_percent(None)
            except psutil.Error:  # ended since the walk
                tree.pop(proc.pid, None)
        return [("process", R.PROCESS_RSS_MB, rss / 2**20), ("process", R.PROCESS_CPU_PERCENT, cpu)]

    return sample


def nvml_source(nvml: Any = None) -> Source | None:
    """GPU memory, utilisation, power and energy of the GPUs visible to this task, or None.

    GPUs are named `gpu0`, `gpu1`, ... in CUDA's order (`CUDA_VISIBLE_DEVICES`). Each reading is
    its own NVML call, and one that fails (a MIG instance reports no utilisation or power; a
    driver may refuse power readings) drops that reading only. The energy counter is read only
    on GPUs that answered it once here (`has_energy_counter`). The source is also polled as the
    sampler starts (`at_start`): the counter's first reading opens the trial.

    Args:
        nvml: an initialised `pynvml` module (or a stand-in with its API); None: `nvml_module()`.
    """
    nvml = nvml if nvml is not None else nvml_module()
    if nvml is None:
        return None
    try:
        handles = visible_gpus(nvml)
        _warn_if_orders_differ(nvml)
    except Exception:  # a driver that answers nothing: as if there were no GPU
        return None
    if not handles:
        return None
    readings = [
        GPU_READINGS + ((ENERGY_READING,) if has_energy_counter(nvml, handle) else ())
        for handle in handles
    ]

    def sample() -> list[tuple[str, str, float]]:
        rows = []
        for i, handle in enumerate(handles):
            for metric, read in readings[i]:
                try:
                    rows.append((f"gpu{i}", metric, read(nvml, handle)))
                except Exception as exc:  # NVMLError: NOT_SUPPORTED, GPU_IS_LOST, ...
                    log.debug("gpu%d %s: %s", i, metric, exc)
        return rows

    return at_start(sample)


def has_energy_counter(nvml: Any, handle: Any) -> bool:
    """Whether a GPU keeps NVML's total-energy counter (Volta and later; not a MIG instance)."""
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # NVMLError_NotSupported, or an nvidia-ml-py without the call
        return False
    return True


def at_start(source: Source) -> Source:
    """Mark `source` to be polled also as the sampler starts, not only after its first interval.

    A counter's first reading must come before the measured requests.
    """
    source.at_start = True  # type: ignore[attr-defined]
    return source


# What each GPU reports, read one NVML call at a time, in the units of its metric's name.
GPU_READINGS: tuple[tuple[str, Callable[[Any, Any], float]], ...] = (
    (R.GPU_MEMORY_USED_MB, lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20),
    (R.GPU_UTILIZATION_PERCENT, lambda nvml, h: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)),
    (R.GPU_POWER_W, lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000),
)
# NVML's total energy since the driver loaded, in millijoules (`sweep.core.energy` differences it).
ENERGY_READING: tuple[str, Callable[[Any, Any], float]] = (
    R.ENERGY_COUNTER_J,
    lambda nvml, h: nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000,
)
# NVML reports a little less than a card's advertised memory (an "L4 24 GB" has 24.15e9 bytes,
# a "T4 16 GB" 16.1e9); a card below this share of its hardware option's memory_gb is another one.
MEMORY_SHARE = 0.9
_warned_orders: set[str] = set()


def check_gpu_memory(hardware: str, memory_gb: float) -> None:
    """Fail when a visible GPU has less memory than the hardware option says; quiet without NVML.

    Ray labels every A100 `A100`, 40 GB or 80 GB, so `hardware=a100_80g` may be placed on a
    40 GB card: measured there, its numbers would be filed under the wrong card. Call it in the
    worker before the backend starts.

    Raises:
        BackendError: a visible GPU is smaller than `MEMORY_SHARE` x `memory_gb`.
    """
    nvml = nvml_module()
    if nvml is None:
        return
    try:
        totals = [nvml.nvmlDeviceGetMemoryInfo(h).total for h in visible_gpus(nvml)]
    except Exception:  # NVML cannot tell: the check is a guard, not a requirement
        return
    for index, total in enumerate(totals):
        if total < MEMORY_SHARE * memory_gb * 1e9:
            raise BackendError(
                f"hardware={hardware} is a {memory_gb:g} GB GPU, but GPU {index} here has "
                f"{total / 2**30:.1f} GiB: another card with the same Ray accelerator type; "
                f"choose the hardware option of this card",
                R.ERROR_BACKEND_START,
            )


def visible_gpus(nvml: Any) -> list[Any]:
    """NVML handles of the GPUs in `CUDA_VISIBLE_DEVICES`, in CUDA's order.

    Entries are indices, GPU UUIDs (or a unique prefix of one) or MIG instance UUIDs, as CUDA
    takes them; as in CUDA, the first entry that names no device hides every entry after it.
    An index is NVML's, which is CUDA's own when `CUDA_DEVICE_ORDER=PCI_BUS_ID`, or when all
    the node's GPUs are alike (CUDA's default puts the fastest first, ties in PCI bus order).
    """
    count = nvml.nvmlDeviceGetCount()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [str(i) for i in range(count)] if visible is None else visible.split(",")
    handles = []
    for entry in (e.strip() for e in entries):
        handle = _gpu_handle(nvml, entry, count)
        if handle is None:
            break
        handles.append(handle)
    return handles


def _gpu_handle(nvml: Any, entry: str, count: int) -> Any:
    """The NVML handle of one `CUDA_VISIBLE_DEVICES` entry, or None when it names no device."""
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry)) if int(entry) < count else None
    if entry.startswith("MIG-"):
        for uuid in (entry, entry.encode()):  # older nvidia-ml-py releases take bytes only
            try:
                return nvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:  # not found, or the old MIG-GPU-<uuid>/<gi>/<ci> form
                continue
        return None
    if not entry.startswith("GPU-"):
        return None
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    matches = [h for h in handles if nvml_text(nvml.nvmlDeviceGetUUID(h)).startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def _warn_if_orders_differ(nvml: Any) -> None:
    """Warn once when indices may mean different GPUs to CUDA and to NVML (mixed cards)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    by_index = visible is None or any(e.strip().isdigit() for e in visible.split(","))
    if not by_index or os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return
    count = nvml.nvmlDeviceGetCount()
    names = sorted(
        {
            nvml_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(count)
        }
    )
    key = ",".join(names)
    if len(names) > 1 and key not in _warned_orders:
        _warned_orders.add(key)
        log.warning(
            "this node has different GPUs (%s) and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA's "
            "device indices may not be NVML's, so GPU telemetry may sample another GPU than the "
            "engine's; set CUDA_DEVICE_ORDER=PCI_BUS_ID on the node",
            key,
        )


def nvml_module() -> Any:
    """The initialised `pynvml` module, or None without the library, a driver or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # not an error on CPU machines
        return None
    return pynvml


def nvml_text(value: str | bytes) -> str:
    """NVML strings are bytes in older nvidia-ml-py releases."""
    return value.decode() if isinstance(value, bytes) else value


class Sampler:
    """Polls each source at its own interval on a daemon thread while the `with` block runs.

    `sources` pairs each source with its interval in seconds. A sample's time is taken when its
    poll starts. The sampler shares the process (and its GIL) with the load generator, so what
    it does delays token reads: against vLLM's own benchmark client on one CPU vLLM server,
    polling the process tree and /metrics ten times a second put our median first-token time
    at 73-89 ms against its 10-17 ms; at the intervals below (and with only the mapped lines
    of /metrics parsed) ours was 15-16 ms. Only cheap sources (NVML) run fast.
    Sources marked `at_start` (counters) are also polled as the block starts; sources with a
    `close` method are closed when the block ends.
    """

    def __init__(self, sources: list[tuple[Source, float]], t0: float) -> None:
        self.sources = sources
        self.t0 = t0
        self.rows: list[tuple[float, str, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def __enter__(self) -> Sampler:
        self._poll([source for source, _ in self.sources if getattr(source, "at_start", False)])
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


# Prometheus types whose samples only grow (a histogram's buckets, `_sum` and `_count`); a
# summary's `_sum` and `_count` grow too, its quantiles do not.
CUMULATIVE_TYPES = ("counter", "histogram")


class ServerCapture:
    """The server's whole /metrics at the start and the end of the `with` block, as one table.

    Two scrapes per trial, both outside the requests. A server that does not answer, or not
    in Prometheus text, leaves the capture empty with one warning; the trial goes on.
    """

    def __init__(self, scrape: Scrape | None, t0: float, source: str = "server") -> None:
        self.scrape = scrape
        self.t0 = t0
        self.source = source
        self.snapshots: list[tuple[float, Snapshot]] = []

    def __enter__(self) -> ServerCapture:
        self._take()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.snapshots:
            self._take()
        if self.scrape is not None:
            self.scrape.close()

    def _take(self) -> None:
        if self.scrape is None:
            return
        t = now_s() - self.t0
        try:
            self.snapshots.append((t, self.scrape()))
            return
        except ScrapeError as exc:
            reason = str(exc)
        except Exception as exc:  # whatever else goes wrong, telemetry never fails a trial
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("no server metrics for this trial: %s", scrub_text(reason))
        self.snapshots.clear()

    def table(self, trial_id: str) -> pa.Table:
        """Every series with its start, end and (counters, histograms) delta; empty if none."""
        if len(self.snapshots) != 2:
            return R.SERVER_METRICS_SCHEMA.empty_table()
        (t_start, start), (t_end, end) = self.snapshots
        rows = []
        for key in start.keys() | end.keys():
            sample, labels, le = key
            family, kind, _ = end.get(key) or start[key]
            first, last = _value(start.get(key)), _value(end.get(key))
            rows.append(
                {
                    R.TRIAL_ID: trial_id,
                    R.SOURCE: self.source,
                    R.FAMILY: family,
                    R.KIND: kind,
                    R.SAMPLE: sample,
                    R.LABELS: labels,
                    R.LE: le,
                    R.START: first,
                    R.END: last,
                    R.DELTA: _delta(first, last) if _grows(kind, family, sample) else None,
                    R.START_T_S: t_start,
                    R.END_T_S: t_end,
                }
            )
        rows.sort(key=lambda r: (r[R.SAMPLE], r[R.LABELS], r[R.LE] or 0.0))
        return pa.Table.from_pylist(rows, schema=R.SERVER_METRICS_SCHEMA)


def _value(entry: tuple[str, str, float] | None) -> float | None:
    return None if entry is None else entry[2]


def _grows(kind: str, family: str, sample: str) -> bool:
    if sample.endswith("_created"):  # a creation timestamp, whatever family it sits in
        return False
    return kind in CUMULATIVE_TYPES or (
        kind == "summary" and sample in (f"{family}_sum", f"{family}_count")
    )


def _delta(start: float | None, end: float | None) -> float | None:
    """The growth over the trial; a series born in it, or reset (a restart), counts from 0."""
    if end is None:
        return None
    if start is None or end < start:
        return end
    return end - start
