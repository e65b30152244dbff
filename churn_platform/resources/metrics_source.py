"""Metrics sources for the canary analysis: Prometheus, or a direct scrape of the servers.

Both implement ``core.rollout.MetricsSource``: ``error_rate(version, window_seconds)``
returns the failed share of ``version``'s ``/predict`` requests over the window (its 5xx
answers plus the router's 502s for it: a version the router cannot reach is failing, 4xx
are the client's), how many requests it rests on, their p95 latency and the 4xx share of
the requests (``client_error_rate``; 499, a client that hung up, left out), which the
canary compares with the baseline's. Neither raises: an unreachable source or a window without data
gives ``ErrorRate(error_rate=None, reason=...)``, and the canary then refuses to promote.
A version in shadow (mirrored copies only) is read the same way: its server counts the
copies, and the router's undelivered copies are its ``router_shadow_requests_total`` 502s.

The Prometheus queries aggregate the counts before dividing::

    sum(increase(http_requests_total{status=~"5..", model_version="V"}[w])) + router 502s
      / sum(increase(http_requests_total{model_version="V"}[w])) + router 502s

A per-series ratio such as ``rate(x{status=~"5.."}[5m]) / rate(x[5m])`` matches every
5xx series with itself (same labels) and so answers 1, or nothing when there are no
errors; it never gives the real share.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx
import requests
from prometheus_client.parser import text_string_to_metric_families

from churn_platform.core.canary import UNREACHABLE
from churn_platform.core.rollout import ErrorRate, MetricsSource

REQUESTS_METRIC = "http_requests_total"
LATENCY_METRIC = "http_request_duration_seconds"
ROUTER_METRIC = "router_requests_total"
SHADOW_METRIC = "router_shadow_requests_total"  # mirrored copies (shadow step)
# what the router answers when it cannot reach a version: that version's failure
ROUTER_FAILURE_STATUS = "502"
LATENCY_QUANTILE = 0.95
# a client hanging up mid-body is neither version's doing
CLIENT_GONE_STATUS = "499"


def _selector(version: str, label_filters: Mapping[str, str], errors: bool) -> str:
    labels = [f'{k}="{v}"' for k, v in sorted(label_filters.items())]
    if errors:
        labels.append('status=~"5.."')
    labels.append(f'model_version="{version}"')
    return "{" + ", ".join(labels) + "}"


def client_error_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str] | None = None
) -> str:
    """PromQL for ``version``'s 4xx answers over the window (499 left out); over
    ``request_count_query`` it is the version's 4xx share."""
    labels = [f'{k}="{v}"' for k, v in sorted((label_filters or {}).items())]
    labels += ['status=~"4.."', f'status!="{CLIENT_GONE_STATUS}"', f'model_version="{version}"']
    selector = "{" + ", ".join(labels) + "}"
    return f"sum(increase({REQUESTS_METRIC}{selector}[{_range(window_seconds)}]))"


def _router_selector(version: str, label_filters: Mapping[str, str]) -> str:
    """The router's undelivered requests to ``version`` (client and mirrored counters)."""
    labels = [f'{k}="{v}"' for k, v in sorted(label_filters.items())]
    labels += [f'backend="{version}"', f'status="{ROUTER_FAILURE_STATUS}"']
    return "{" + ", ".join(labels) + "}"


def _range(window_seconds: float) -> str:
    # rate() needs two samples inside the range; below 2 s it is always empty
    return f"{max(2, round(window_seconds))}s"


def _count_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str], errors: bool
) -> str:
    w = _range(window_seconds)
    served = f"sum(increase({REQUESTS_METRIC}{_selector(version, label_filters, errors)}[{w}]))"
    # requests the router could not deliver never reach the server's counters; `or
    # vector(0)` keeps the sum when the router is not scraped or never failed
    router = _router_selector(version, label_filters)
    failed = f"(sum(increase({ROUTER_METRIC}{router}[{w}])) or vector(0))"
    # mirrored copies the router could not deliver (the shadow step) fail the same way
    copies = f"(sum(increase({SHADOW_METRIC}{router}[{w}])) or vector(0))"
    return f"{served} + {failed} + {copies}"


def error_count_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str] | None = None
) -> str:
    """PromQL for ``version``'s failed requests over the window: its 5xx answers plus the
    router's 502s for it (the aggregated share is this over ``request_count_query``)."""
    return _count_query(version, window_seconds, label_filters or {}, True)


def request_count_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str] | None = None
) -> str:
    """PromQL for how many requests ``version`` answered (or failed to) over the window."""
    return _count_query(version, window_seconds, label_filters or {}, False)


def latency_query(
    version: str, window_seconds: float, label_filters: Mapping[str, str] | None = None
) -> str:
    """PromQL for the p95 of ``version``'s /predict latency over the window, seconds."""
    labels = [f'{k}="{v}"' for k, v in sorted((label_filters or {}).items())]
    labels += ['path="/predict"', f'model_version="{version}"']
    selector = "{" + ", ".join(labels) + "}"
    return (
        f"histogram_quantile({LATENCY_QUANTILE}, sum by (le) "
        f"(rate({LATENCY_METRIC}_bucket{selector}[{_range(window_seconds)}])))"
    )


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
        """The failed share of ``version``'s requests over the last ``window_seconds``,
        the count it rests on, its p95 latency and its 4xx share."""
        errors_q = error_count_query(version, window_seconds, self.label_filters)
        count_q = request_count_query(version, window_seconds, self.label_filters)
        latency_q = latency_query(version, window_seconds, self.label_filters)
        client_q = client_error_query(version, window_seconds, self.label_filters)
        evidence = f"{errors_q} ; {count_q} ; {latency_q} ; {client_q}"
        try:
            count = self.query(count_q)
            errors = self.query(errors_q)
            p95 = self.query(latency_q)
            refused = self.query(client_q)
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
        if count <= 0 or errors is None:
            return ErrorRate(
                version,
                None,
                count,
                evidence,
                f"no data from Prometheus: model_version={version} served no requests "
                f"in {_range(window_seconds)}",
            )
        p95 = None if p95 is None or math.isinf(p95) else p95
        client = min((refused or 0.0) / count, 1.0)  # no 4xx series: none refused
        return ErrorRate(version, min(errors / count, 1.0), count, evidence, "", p95, client)


@dataclass(frozen=True)
class _Counters:
    """Cumulative counters of one version at one scrape."""

    at: float
    total: float  # requests answered by the server plus requests the router failed
    errors: float  # 5xx answers plus requests the router failed
    client_errors: float  # 4xx answers (499 left out)
    buckets: tuple[tuple[float, float], ...]  # latency histogram: (upper bound, count)


def _read_counters(
    text: str, version: str
) -> tuple[float, float, float, tuple[tuple[float, float], ...]]:
    """(all requests, 5xx requests, 4xx requests but 499, /predict latency buckets) of
    ``version`` in a model server's /metrics page."""
    total = errors = client = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model_version") != version:
                continue
            if sample.name == REQUESTS_METRIC:
                total += sample.value
                status = sample.labels.get("status", "")
                if status.startswith("5"):
                    errors += sample.value
                elif status.startswith("4") and status != CLIENT_GONE_STATUS:
                    client += sample.value
            elif sample.name == f"{LATENCY_METRIC}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return total, errors, client, tuple(sorted(buckets.items()))


def _router_failures(text: str, version: str) -> float:
    """Requests the router could not deliver to ``version`` (its 502s, client requests and
    mirrored copies), from its /metrics."""
    failed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name in (ROUTER_METRIC, SHADOW_METRIC)
                and sample.labels.get("backend") == version
                and sample.labels.get("status") == ROUTER_FAILURE_STATUS
            ):
                failed += sample.value
    return failed


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets:
    linear inside the bucket holding the quantile; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound, as Prometheus
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return None


class ScrapeMetrics:
    """``MetricsSource`` without Prometheus: scrapes each server's ``/metrics`` itself.

    Every reading scrapes the version's server (and the router, when ``router_url`` is
    given, for the requests it could not deliver to that version) and keeps the
    counters; the rate is the delta between now and the newest earlier scrape at least
    ``window_seconds`` old (or the oldest one kept). The first reading of a version has
    nothing to compare with and returns no data. ``urls_by_version`` is a mapping or a
    function returning one (so versions deployed later are found); ``router_url`` a URL
    or a function returning one (None: no router to read).
    """

    def __init__(
        self,
        urls_by_version: Mapping[str, str] | Callable[[], Mapping[str, str]],
        *,
        router_url: str | Callable[[], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._urls = urls_by_version
        self._router = router_url
        self._clock = clock
        self._timeout = timeout_seconds
        self._history: dict[str, deque[_Counters]] = {}

    def _url(self, version: str) -> str | None:
        urls = self._urls() if callable(self._urls) else self._urls
        url = urls.get(version)
        return url.rstrip("/") if url else None

    def _router_url(self) -> str | None:
        url = self._router() if callable(self._router) else self._router
        return url.rstrip("/") if url else None

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        """The failed share of ``version``'s requests since the scrape ``window_seconds``
        ago (5xx answers plus the router's 502s for it), its p95 latency and 4xx share."""
        url = self._url(version)
        router = self._router_url()
        method = f"scrape {url}/metrics: delta of {REQUESTS_METRIC} over {window_seconds:g}s"
        if router:
            method += f" plus {ROUTER_METRIC}{{status=502}} from {router}/metrics"
        if url is None:
            return ErrorRate(
                version, None, 0.0, method, f"{UNREACHABLE}: no URL known for version {version}"
            )
        try:
            response = httpx.get(url + "/metrics", timeout=self._timeout)
            response.raise_for_status()
            total, errors, client, buckets = _read_counters(response.text, version)
            if router:
                answer = httpx.get(router + "/metrics", timeout=self._timeout)
                answer.raise_for_status()
                failed = _router_failures(answer.text, version)
                total, errors = total + failed, errors + failed
        except Exception as exc:
            return ErrorRate(version, None, 0.0, method, f"{UNREACHABLE}: GET /metrics: {exc}")
        now = self._clock()
        history = self._history.setdefault(version, deque())
        base = None
        for snapshot in history:
            if now - snapshot.at >= window_seconds:
                base = snapshot
        if base is None and history:
            base = history[0]
        current = _Counters(now, total, errors, client, buckets)
        history.append(current)
        while len(history) > 2 and now - history[1].at >= window_seconds:
            history.popleft()  # keep one snapshot older than the window
        if base is None:
            return ErrorRate(
                version, None, 0.0, method, "no data yet: first scrape, the next one compares"
            )
        d_total, d_errors = total - base.total, errors - base.errors
        if d_total < 0 or d_errors < 0:
            history.clear()
            history.append(current)
            return ErrorRate(
                version, None, 0.0, method, "no data: counters went down (server restarted)"
            )
        if d_total == 0:
            return ErrorRate(
                version,
                None,
                0.0,
                method,
                f"no data: version {version} served no requests in the last {now - base.at:.1f}s",
            )
        old = dict(base.buckets)
        delta = tuple((b, c - old.get(b, 0.0)) for b, c in buckets)
        p95 = histogram_quantile(LATENCY_QUANTILE, delta)
        d_client = max(client - base.client_errors, 0.0)
        return ErrorRate(version, d_errors / d_total, d_total, method, "", p95, d_client / d_total)


class MetricsResource(dg.ConfigurableResource):
    """Where the canary reads error rates: Prometheus when ``prometheus_url`` is set,
    else a direct scrape of the model servers' ``/metrics``."""

    prometheus_url: str = ""
    environment_label: str = ""  # filter Prometheus series on environment="<this>"

    def source(
        self,
        urls_by_version: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        router_url: str | Callable[[], str | None] | None = None,
    ) -> MetricsSource:
        """The configured ``MetricsSource``; scraping needs ``urls_by_version`` and reads
        the router's failures when ``router_url`` is given."""
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
        return ScrapeMetrics(urls_by_version, router_url=router_url)
