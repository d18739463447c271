"""Scraping a server's Prometheus `/metrics` into telemetry samples.

Server backends (sim, vLLM, ...) hand the trial's sampler a source made here, with their own
mapping from Prometheus sample names to the project's timeseries metric names (`sweep.core.records`)
and a scale (vLLM reports KV-cache usage as a fraction; the records hold percent). Parsing goes
through `prometheus_client`'s own text parser, so label sets, escaping and `_total` suffixes are
handled as Prometheus defines them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Prometheus sample name -> (timeseries metric name, factor applied to the value).
MetricMap = dict[str, tuple[str, float]]

SOURCE = "server"
Rows = list[tuple[str, str, float]]


def parse_metrics(text: str, mapping: MetricMap, source: str = SOURCE) -> Rows:
    """The (source, metric, value) samples of `text` whose names `mapping` knows.

    A metric exported with several label sets (one per engine, say) gives one sample each.
    Only the lines of mapped metrics reach the parser: vLLM exports some 600 lines, whose full
    parse took 12 ms of this process's CPU per scrape, time the load generator sharing the
    process could not spend reading tokens.
    """
    samples = []
    for family in text_string_to_metric_families(_lines_of(text, mapping.keys())):
        for sample in family.samples:
            target = mapping.get(sample.name)
            if target is not None:
                metric, factor = target
                samples.append((source, metric, float(sample.value) * factor))
    return samples


def _lines_of(text: str, names: Iterable[str]) -> str:
    """The sample lines of `names`, and the HELP / TYPE lines of their families."""
    names = tuple(names)
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            words = line.split(" ", 3)  # "# TYPE family type" or "# HELP family text"
            if len(words) >= 3 and any(name.startswith(words[2]) for name in names):
                kept.append(line)  # a counter's family drops the `_total` of its samples
        elif line.partition("{")[0].partition(" ")[0] in names:
            kept.append(line)
    return "\n".join(kept) + "\n"


class PrometheusSource:
    """A telemetry source that GETs `url` and maps its samples; a failed scrape gives none.

    It keeps one connection open for the trial: a fresh client per scrape (new connection pool,
    TLS context and certificate bundle each time) took 0.1 to 0.9 s per scrape next to a busy
    load generator on two cores, so the sampler caught almost no sample while requests ran.
    `transform`, if given, post-processes each scrape's rows (vLLM adds draft acceptance).
    The sampler calls `close` when the trial ends.
    """

    def __init__(
        self,
        url: str,
        mapping: MetricMap,
        source: str = SOURCE,
        timeout_s: float = 1.0,
        transform: Callable[[Rows], Rows] | None = None,
    ) -> None:
        self.url = url
        self.mapping = mapping
        self.source = source
        self.transform = transform
        # trust_env=False: a proxy from the environment must not intercept loopback scrapes.
        self._client = httpx.Client(timeout=timeout_s, trust_env=False)

    def __call__(self) -> Rows:
        """One scrape's mapped samples; none when the server does not answer."""
        try:
            response = self._client.get(self.url)
            response.raise_for_status()
        except httpx.HTTPError:
            return []
        rows = parse_metrics(response.text, self.mapping, self.source)
        return self.transform(rows) if self.transform else rows

    def close(self) -> None:
        """Close the connection."""
        self._client.close()
