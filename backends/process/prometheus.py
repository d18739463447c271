"""Scraping a server's Prometheus `/metrics`: mapped telemetry samples, or every series whole.

Server backends (sim, vLLM, ...) hand the trial's sampler a source made here, with their own
mapping from Prometheus sample names to the project's timeseries metric names (`sweep.core.records`)
and a scale (vLLM reports KV-cache usage as a fraction; the records hold percent). `Scrape` reads
every numeric series at once (`snapshot`), which the trial takes at its start and end
(`sweep.measure.telemetry.ServerCapture`). Parsing goes through `prometheus_client`'s own text
parser, so label sets, escaping and `_total` suffixes are handled as Prometheus defines them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Prometheus sample name -> (timeseries metric name, factor applied to the value).
MetricMap = dict[str, tuple[str, float]]

SOURCE = "server"
Rows = list[tuple[str, str, float]]


def client_for(url: str, timeout_s: float) -> httpx.Client:
    """An HTTP client for `url`; no proxy from the environment (it would intercept loopback).

    A plain-HTTP URL never uses TLS, so its client skips loading the certificate bundle, which
    took 40 to 100 ms per client here.
    """
    return httpx.Client(timeout=timeout_s, trust_env=False, verify=not url.startswith("http://"))


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
        self._client = client_for(url, timeout_s)

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


# (sample name, labels as sorted JSON without `le`, bucket bound or None) -> (family, type, value)
SeriesKey = tuple[str, str, float | None]
Snapshot = dict[SeriesKey, tuple[str, str, float]]


class ScrapeError(Exception):
    """A /metrics that could not be read or is not Prometheus text; the message says which."""


def snapshot(text: str) -> Snapshot:
    """Every sample of a Prometheus text exposition, keyed by series.

    Raises:
        ScrapeError: `text` is not Prometheus text, or holds no sample.
    """
    series: Snapshot = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = dict(sample.labels)
                le = labels.pop("le", None) if sample.name.endswith("_bucket") else None
                key = (sample.name, json.dumps(labels, sort_keys=True), _bound(le))
                series[key] = (family.name, family.type, float(sample.value))
    except ValueError as exc:  # the parser's only complaint, whatever the line
        raise ScrapeError(f"not Prometheus text ({_short(str(exc))})") from None
    if not series:
        raise ScrapeError("no Prometheus sample in the response")
    return series


def _bound(le: str | None) -> float | None:
    if le is None:
        return None
    try:
        return float(le)  # "+Inf" included
    except ValueError:
        return math.nan


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Scrape:
    """GETs one server's whole `/metrics` and parses it (`snapshot`); `close` when done.

    Made per trial and called twice, at its start and end, outside the requests.
    """

    def __init__(
        self,
        url: str,
        headers: Callable[[], Mapping[str, str]] | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.headers = headers  # read at each scrape, as requests read them (an API key)
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None

    def __call__(self) -> Snapshot:
        """Every series the server exports now.

        Raises:
            ScrapeError: the server did not answer, answered an error, or not Prometheus text.
        """
        try:
            headers = dict(self.headers()) if self.headers else {}
        except Exception as exc:  # e.g. a header naming an unset variable: said, never raised
            raise ScrapeError(f"no headers for {self.url}: {_short(str(exc))}") from None
        if self._client is None:
            self._client = client_for(self.url, self.timeout_s)
        try:
            response = self._client.get(self.url, headers=headers)
        except httpx.HTTPError as exc:
            raise ScrapeError(
                f"GET {self.url} failed: {_short(str(exc)) or type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise ScrapeError(f"GET {self.url} answered HTTP {response.status_code}")
        return snapshot(response.text)

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._client is not None:
            self._client.close()
            self._client = None
