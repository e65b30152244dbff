"""Shadow traffic: a copy of client requests sent to one version whose answers reach no one.

``PUT /-/mirror`` with ``{"mirror": {"version": "4", "percent": 100}}`` starts a mirror
session (``{"mirror": null}`` ends it); the version must be in the backend table (at any
weight, usually 0). For each ``/predict`` or ``/invocations`` request the client is answered
by the weighted backend as always; then, for ``percent`` of the requests (spread evenly),
a copy of the same body goes to the mirror version in the background. Its answer is only
recorded: status, latency and probabilities, paired with the client's answer on the same
request. The copies use their own connection pool, and at most ``MAX_IN_FLIGHT`` are under
way at once; a copy that would exceed that is dropped and counted
(``router_shadow_dropped_total``), so a slow or hung candidate never slows the clients.

``GET /-/mirror`` returns the session and its record (``ShadowLog.as_json``); both need
the admin token (the record holds scores). Counters on ``/metrics``:
``router_shadow_requests_total{backend, status}`` (a copy that could not be delivered is
a 502 there, as on the client path).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from churn_platform.serving.router.table import Backend

MAX_IN_FLIGHT = 100  # mirrored copies under way at once; beyond that they are dropped
MAX_KEPT = 20_000  # paired observations kept per session (the newest)


@dataclass(frozen=True)
class Mirror:
    """Which version gets the copies, and what share of the requests (whole percent)."""

    version: str
    url: str
    percent: int


def parse_mirror(payload: Any, table: Mapping[str, Backend]) -> Mirror | None:
    """The mirror a ``PUT /-/mirror`` body asks for (None: stop mirroring); ``ValueError``
    saying what to send otherwise."""
    if not isinstance(payload, dict) or "mirror" not in payload:
        raise ValueError(
            'send {"mirror": {"version": "<version>", "percent": 100}} or {"mirror": null}'
        )
    spec = payload["mirror"]
    if spec is None:
        return None
    if not isinstance(spec, dict) or "version" not in spec:
        raise ValueError('"mirror" must be {"version": "<version>", "percent": 1..100} or null')
    version = str(spec["version"])
    percent = spec.get("percent", 100)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise ValueError(f"mirror percent must be a whole percent in 1..100, got {percent!r}")
    if version not in table:
        raise ValueError(
            f"mirror version {version!r} is not in the backend table {sorted(table)}; "
            'add it with PUT /-/weights {"backends": {...}} (weight 0) first'
        )
    return Mirror(version, table[version].url, percent)


def probabilities(body: bytes) -> list[float] | None:
    """The scores of a ``/predict`` (``probabilities``) or ``/invocations``
    (``predictions``) answer, None when the body holds none."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    scores = payload.get("probabilities", payload.get("predictions"))
    if not isinstance(scores, list) or not all(isinstance(s, int | float) for s in scores):
        return None
    return [float(s) for s in scores]


class ShadowLog:
    """What one mirror session observed: counts, and per mirrored request both latencies
    and both versions' scores when both answered 200 with the same number of them."""

    def __init__(self, mirror: Mirror, max_kept: int = MAX_KEPT) -> None:
        self.mirror = mirror
        self.started = time.time()
        self.requests = 0
        self.candidate_errors = 0  # 5xx answers or copies not delivered
        self.champion_errors = 0
        self.dropped = 0
        self.champion_scores: deque[float] = deque(maxlen=max_kept)
        self.candidate_scores: deque[float] = deque(maxlen=max_kept)
        self.champion_latency: deque[float] = deque(maxlen=max_kept)
        self.candidate_latency: deque[float] = deque(maxlen=max_kept)
        self._credit = 0

    def take(self) -> bool:
        """Whether this request is one of the mirrored ``percent`` (evenly spread)."""
        self._credit += self.mirror.percent
        if self._credit >= 100:
            self._credit -= 100
            return True
        return False

    def record(
        self, primary: tuple[int, float, bytes], copy: tuple[int, float, bytes | None]
    ) -> None:
        """One mirrored request: (status, seconds, body) of the client's answer and of the copy."""
        (p_status, p_seconds, p_body), (c_status, c_seconds, c_body) = primary, copy
        self.requests += 1
        self.candidate_errors += c_status >= 500
        self.champion_errors += p_status >= 500
        self.champion_latency.append(p_seconds)
        self.candidate_latency.append(c_seconds)
        if p_status != 200 or c_status != 200 or c_body is None:
            return
        ours, theirs = probabilities(p_body), probabilities(c_body)
        if ours is None or theirs is None or len(ours) != len(theirs):
            return
        self.champion_scores.extend(ours)
        self.candidate_scores.extend(theirs)

    def as_json(self) -> dict[str, Any]:
        """``GET /-/mirror``'s ``record``."""
        return {
            "version": self.mirror.version,
            "percent": self.mirror.percent,
            "started": self.started,
            "requests": self.requests,
            "candidate_errors": self.candidate_errors,
            "champion_errors": self.champion_errors,
            "dropped": self.dropped,
            "champion_scores": list(self.champion_scores),
            "candidate_scores": list(self.candidate_scores),
            "champion_latency_seconds": list(self.champion_latency),
            "candidate_latency_seconds": list(self.candidate_latency),
        }


class Mirroring:
    """The router's mirror: the current session, the copies in flight and the counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.log: ShadowLog | None = None
        self.client: httpx.AsyncClient | None = None  # its own pool, opened by the lifespan
        self.tasks: set[asyncio.Task[None]] = set()
        self.sent = Counter(
            "router_shadow_requests_total",
            "Copies of client requests mirrored to a version (shadow), by version and status.",
            ["backend", "status"],
            registry=registry,
        )
        self.dropped = Counter(
            "router_shadow_dropped_total",
            "Copies not mirrored because too many were under way.",
            ["backend"],
            registry=registry,
        )

    def start(self, mirror: Mirror | None) -> None:
        """A fresh session for ``mirror`` (None: stop mirroring)."""
        self.log = None if mirror is None else ShadowLog(mirror)

    def keep_if_listed(self, table: Mapping[str, Backend]) -> None:
        """End the session when its version left the backend table."""
        if self.log is not None and self.log.mirror.version not in table:
            self.log = None

    def maybe_copy(
        self,
        served_by: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        primary: tuple[int, float, bytes],
    ) -> None:
        """Send a copy of this request to the mirror version in the background, if there is
        a session, the request is in its share and it was not served by that version."""
        log, client = self.log, self.client
        if log is None or client is None or served_by == log.mirror.version or not log.take():
            return
        if len(self.tasks) >= MAX_IN_FLIGHT:
            log.dropped += 1
            self.dropped.labels(log.mirror.version).inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._copy(client, log, path, body, dict(headers), primary)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _copy(
        self,
        client: httpx.AsyncClient,
        log: ShadowLog,
        path: str,
        body: bytes,
        headers: dict[str, str],
        primary: tuple[int, float, bytes],
    ) -> None:
        started = time.perf_counter()
        try:
            answer = await client.post(log.mirror.url + path, content=body, headers=headers)
            copy: tuple[int, float, bytes | None] = (
                answer.status_code,
                time.perf_counter() - started,
                answer.content,
            )
        except httpx.HTTPError:
            copy = (502, time.perf_counter() - started, None)
        self.sent.labels(log.mirror.version, str(copy[0])).inc()
        log.record(primary, copy)

    def open(self, timeout_seconds: float) -> None:
        """Open the copies' own connection pool (``MAX_IN_FLIGHT`` connections)."""
        limits = httpx.Limits(
            max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT
        )
        self.client = httpx.AsyncClient(timeout=timeout_seconds, limits=limits)

    async def stop(self) -> None:
        """Cancel the copies under way and close the pool (the router is shutting down)."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()
