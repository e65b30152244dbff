"""The model server's Prometheus instruments, in their own registry (no global state)."""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10))


class ServerMetrics:
    """The Prometheus instruments of one server, in their own registry (no global state)."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        self.version = version
        self.requests = Counter(
            "http_requests_total",
            "Answers to /predict by HTTP status.",
            ["path", "status", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer /predict, seconds.",
            ["path", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            "churn_prediction_score",
            "Predicted churn probabilities.",
            ["model_version"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.loaded = Gauge(
            "churn_model_loaded",
            "1 once the model is loaded and serving.",
            ["model_version"],
            registry=self.registry,
        )
        self.records = Counter(
            "churn_scored_records_total",
            "Records scored (a request may hold many).",
            ["model_version"],
            registry=self.registry,
        )
        # children resolved once: label lookups cost more than the increments
        self._latency = self.latency.labels("/predict", version)
        self._scores = self.scores.labels(version)
        self._records = self.records.labels(version)
        self._by_status: dict[tuple[str, int], Any] = {}
        for status in (200, 400, 422, 500, 503):
            self._by_status[("/predict", status)] = self.requests.labels(
                "/predict", str(status), version
            )

    def observe(
        self,
        status: int,
        seconds: float,
        scores: np.ndarray | None = None,
        path: str = "/predict",
    ) -> None:
        """Count one scoring answer (``/predict`` or ``/invocations``); record latency, scores."""
        key = (path, status)
        child = self._by_status.get(key)
        if child is None:
            child = self._by_status[key] = self.requests.labels(path, str(status), self.version)
        child.inc()
        if path == "/predict":
            self._latency.observe(seconds)
        else:
            self.latency.labels(path, self.version).observe(seconds)
        if scores is not None:
            self._records.inc(len(scores))
            observe = self._scores.observe
            for p in scores.tolist():  # Python floats: no NumPy scalar per score
                observe(p)
