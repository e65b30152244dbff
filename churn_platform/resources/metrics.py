"""Metrics sources for the canary analysis: Prometheus, or a direct scrape of the servers.

Both implement ``core.rollout.MetricsSource``: ``error_rate(version, window_seconds)``
returns the 5xx share of ``version``'s ``/predict`` answers over the window and how many
requests it rests on. Neither raises: an unreachable source or a window without data
gives ``ErrorRate(error_rate=None, reason=...)``, and the canary then refuses to promote.

The Prometheus query aggregates before dividing::

    sum(rate(http_requests_total{status=~"5..", model_version="V"}[w]))
      / sum(rate(http_requests_total{model_version="V"}[w]))

A per-series ratio such as ``rate(x{status=~"5.."}[5m]) / rate(x[5m])`` matches every
5xx series with itself (same labels) and so answers 1, or nothing when there are no
errors; it never gives the real share.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import httpx
import requests
from prometheus_client.parser import text_string_to_metric_families

from churn_platform.core.canary import UNREACHABLE
from churn_platform.core.rollout import ErrorRate, MetricsSource

REQUESTS_METRIC = "http_requests_total"


def _selector(version: str, label_filters: Mapping[str, str], errors: bool) -> str:
    labels = [f'{k}="{v}"' for k, v in sorted(label_filters.items())]
    if errors:
        labels.append('status=~"5.."')
    labels.append(f'model_version="{version}"')
    return "{" + ", ".join(labels) + "}"


def _range(window_seconds: float) -> str:
    # rate() needs two samples inside the range; below 2 s it is always empty
    return f"{max(2, round(window_seconds))}s"


def error_rate_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str] | None = None
) -> str:
    """The aggregated 5xx-share PromQL for ``version`` over ``window_seconds``."""
    filters = label_filters or {}
    w = _range(window_seconds)
    return (
        f"sum(rate({REQUESTS_METRIC}{_selector(version, filters, True)}[{w}])) / "
        f"sum(rate({REQUESTS_METRIC}{_selector(version, filters, False)}[{w}]))"
    )


def request_count_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str] | None = None
) -> str:
    """PromQL for how many requests ``version`` answered over ``window_seconds``."""
    w = _range(window_seconds)
    return f"sum(increase({REQUESTS_METRIC}{_selector(version, label_filters or {}, False)}[{w}]))"


class PrometheusMetrics:
    """``MetricsSource`` reading the model servers' counters from Prometheus.

    ``label_filters`` narrow every query, e.g. ``{"environment": "production"}`` when the
    same version runs in two environments scraped by one Prometheus.
    """

    def __init__(
        self,
        url: str,
        *,
        label_filters: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus url must start with http:// or https://, got {url!r}")
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.label_filters = dict(label_filters or {})
        self.timeout_seconds = timeout_seconds
        # no retry loop: a canary reading must be quick, the next interval retries anyway
        self._client = PrometheusConnect(
            self.url, disable_ssl=True, retry=Retry(total=0), timeout=timeout_seconds
        )

    def query(self, promql: str) -> float | None:
        """The single value of an instant query (None when the result is empty or NaN)."""
        result = self._client.custom_query(promql)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def wait_until_scraped(
        self,
        version: str,
        min_samples: int = 3,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Wait until Prometheus holds ``min_samples`` scrapes of ``version``'s counters
        (call it after ``deploy``: a canary window that starts before the first scrapes
        would read "no data"). Returns False on timeout or when Prometheus is unreachable."""
        selector = _selector(version, self.label_filters, False)
        promql = f"max(count_over_time({REQUESTS_METRIC}{selector}[1m]))"
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                samples = self.query(promql)
            except requests.exceptions.ConnectionError:
                return False  # nothing listens there: waiting will not help
            except Exception:
                samples = None
            if samples is not None and samples >= min_samples:
                return True
            if time.monotonic() > deadline:
                return False
            sleep(0.5)

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        """The 5xx share of ``version``'s requests over the last ``window_seconds``."""
        rate_q = error_rate_query(version, window_seconds, self.label_filters)
        count_q = request_count_query(version, window_seconds, self.label_filters)
        evidence = f"{rate_q} ; {count_q}"
        try:
            count = self.query(count_q)
            rate = self.query(rate_q)
        except Exception as exc:  # connection refused, timeout, bad answer
            return ErrorRate(
                version,
                None,
                0.0,
                evidence,
                f"{UNREACHABLE}: Prometheus at {self.url}: {type(exc).__name__}: {exc}",
            )
        if count is None:
            return ErrorRate(
                version,
                None,
                0.0,
                evidence,
                f"no data from Prometheus for model_version={version} over "
                f"{_range(window_seconds)}: is it scraping the server (file_sd targets)?",
            )
        if rate is None:
            return ErrorRate(
                version,
                None,
                count,
                evidence,
                f"no data from Prometheus: model_version={version} served no requests "
                f"in {_range(window_seconds)}",
            )
        return ErrorRate(version, rate, count, evidence)


def _read_counters(text: str, version: str) -> tuple[float, float]:
    """(all requests, 5xx requests) of ``version`` in a /metrics page."""
    total = errors = 0.0
    for family in text_string_to_metric_families(text):
        if family.name not in ("http_requests", REQUESTS_METRIC):
            continue
        for sample in family.samples:
            if sample.name != REQUESTS_METRIC:
                continue
            if sample.labels.get("model_version") != version:
                continue
            total += sample.value
            if sample.labels.get("status", "").startswith("5"):
                errors += sample.value
    return total, errors


class ScrapeMetrics:
    """``MetricsSource`` without Prometheus: scrapes each server's ``/metrics`` itself.

    Every reading scrapes the version's server and keeps the counters; the rate is the
    delta between now and the newest earlier scrape at least ``window_seconds`` old (or
    the oldest one kept). The first reading of a version has nothing to compare with and
    returns no data. ``urls_by_version`` is a mapping or a function returning one (so
    versions deployed later are found).
    """

    def __init__(
        self,
        urls_by_version: Mapping[str, str] | Callable[[], Mapping[str, str]],
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._urls = urls_by_version
        self._clock = clock
        self._timeout = timeout_seconds
        self._history: dict[str, deque[tuple[float, float, float]]] = {}

    def _url(self, version: str) -> str | None:
        urls = self._urls() if callable(self._urls) else self._urls
        url = urls.get(version)
        return url.rstrip("/") if url else None

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        """The 5xx share of ``version``'s requests since the scrape ``window_seconds`` ago."""
        url = self._url(version)
        method = f"scrape {url}/metrics: delta of {REQUESTS_METRIC} over {window_seconds:g}s"
        if url is None:
            return ErrorRate(
                version, None, 0.0, method, f"{UNREACHABLE}: no URL known for version {version}"
            )
        try:
            response = httpx.get(url + "/metrics", timeout=self._timeout)
            response.raise_for_status()
            total, errors = _read_counters(response.text, version)
        except Exception as exc:
            return ErrorRate(version, None, 0.0, method, f"{UNREACHABLE}: GET {url}/metrics: {exc}")
        now = self._clock()
        history = self._history.setdefault(version, deque())
        base = None
        for snapshot in history:
            if now - snapshot[0] >= window_seconds:
                base = snapshot
        if base is None and history:
            base = history[0]
        history.append((now, total, errors))
        while len(history) > 2 and now - history[1][0] >= window_seconds:
            history.popleft()  # keep one snapshot older than the window
        if base is None:
            return ErrorRate(
                version, None, 0.0, method, "no data yet: first scrape, the next one compares"
            )
        d_total, d_errors = total - base[1], errors - base[2]
        if d_total < 0 or d_errors < 0:
            history.clear()
            history.append((now, total, errors))
            return ErrorRate(
                version, None, 0.0, method, "no data: counters went down (server restarted)"
            )
        if d_total == 0:
            return ErrorRate(
                version,
                None,
                0.0,
                method,
                f"no data: version {version} served no requests in the last {now - base[0]:.1f}s",
            )
        return ErrorRate(version, d_errors / d_total, d_total, method)


class MetricsResource(dg.ConfigurableResource):
    """Where the canary reads error rates: Prometheus when ``prometheus_url`` is set,
    else a direct scrape of the model servers' ``/metrics``."""

    prometheus_url: str = ""
    environment_label: str = ""  # filter Prometheus series on environment="<this>"

    def source(
        self,
        urls_by_version: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    ) -> MetricsSource:
        """The configured ``MetricsSource``; scraping needs ``urls_by_version``."""
        if self.prometheus_url:
            filters: dict[str, Any] = (
                {"environment": self.environment_label} if self.environment_label else {}
            )
            return PrometheusMetrics(self.prometheus_url, label_filters=filters)
        if urls_by_version is None:
            raise ValueError(
                "MetricsResource has no prometheus_url, so it scrapes the servers directly; "
                "pass urls_by_version (e.g. from the deployment target's state) or set "
                "prometheus_url"
            )
        return ScrapeMetrics(urls_by_version)
