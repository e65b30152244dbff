"""Interfaces shared by every deployment target and metrics source.

The canary controller (``core.canary``) drives any ``DeploymentTarget`` through
the same state machine, reading a ``MetricsSource``; the local process target and
the Kubernetes target both implement ``DeploymentTarget``. Nothing here imports
Dagster, MLflow or Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ServedVersion:
    """One model version running in an environment."""

    version: str  # registry version, e.g. "3"
    model_uri: str  # e.g. "models:/churn_model/3"
    url: str  # base URL that answers /predict, /health, /metrics
    weight: int  # percent of the environment's traffic, 0..100


@dataclass(frozen=True)
class EnvironmentState:
    """What an environment serves right now."""

    environment: str  # "staging" or "production"
    endpoint: str | None  # the router's (or route's) URL users call
    versions: tuple[ServedVersion, ...] = field(default_factory=tuple)

    def weights(self) -> dict[str, int]:
        """Traffic percent per version."""
        return {v.version: v.weight for v in self.versions}


@dataclass(frozen=True)
class ErrorRate:
    """The canary analysis reading for one version over one window.

    Errors are the server's failures: 5xx answers of the version, plus requests the
    router could not deliver to it (502, connection refused). A 4xx (the client sent bad
    input) counts as a request, never as an error; its share is ``client_error_rate``,
    which the canary compares with the baseline's (a candidate refusing requests the
    baseline scores is not promoted).
    """

    version: str
    error_rate: float | None  # None when there was no data to compute it from
    request_count: float  # requests seen in the window
    query: str  # the query or method that produced it, recorded as evidence
    reason: str = ""  # why error_rate is None, when it is
    latency_p95_seconds: float | None = None  # p95 of /predict latency, when measured
    client_error_rate: float | None = None  # 4xx share of the requests (499 left out)

    @property
    def error_count(self) -> float:
        """Failed requests in the window (0 without a rate)."""
        return 0.0 if self.error_rate is None else self.error_rate * self.request_count

    @property
    def client_error_count(self) -> float:
        """Requests answered 4xx in the window (0 without a 4xx rate)."""
        rate = self.client_error_rate
        return 0.0 if rate is None else rate * self.request_count


@runtime_checkable
class DeploymentTarget(Protocol):
    """Where model versions run and how traffic is split between them."""

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        """Start ``version`` in ``environment`` at 0% traffic; return once it is healthy."""
        ...

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        """Split traffic (percent, summing to 100) between running versions, live."""
        ...

    def state(self, environment: str) -> EnvironmentState:
        """What ``environment`` serves now."""
        ...

    def retire(self, environment: str, version: str) -> None:
        """Stop serving ``version`` (it must carry 0% traffic)."""
        ...


@runtime_checkable
class MetricsSource(Protocol):
    """Where the canary analysis reads error rates from."""

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        """The 5xx share of ``version``'s requests over the last ``window_seconds``."""
        ...


@dataclass(frozen=True)
class ShadowObservations:
    """What a mirror session saw so far: the candidate answered copies of client requests
    the baseline served. Scores are paired by request (both answered 200); latencies are
    per mirrored request, the baseline's as the client saw it."""

    version: str  # the mirrored (candidate) version
    requests: int  # copies sent
    candidate_errors: int  # copies answered 5xx or not delivered
    champion_scores: tuple[float, ...] = ()
    candidate_scores: tuple[float, ...] = ()
    champion_latency_seconds: tuple[float, ...] = ()
    candidate_latency_seconds: tuple[float, ...] = ()
    dropped: int = 0  # copies not sent because too many were under way
    # False when the target mirrors without seeing the copies' answers (a Gateway's
    # RequestMirror filter): no scores to compare, the metrics source judges alone
    scores_paired: bool = True


@runtime_checkable
class ShadowTarget(Protocol):
    """A ``DeploymentTarget`` that can mirror client requests to a version (shadow)."""

    def set_mirror(self, environment: str, version: str | None, percent: int = 100) -> None:
        """Mirror ``percent`` of the requests to ``version`` from now on, with a fresh
        record (None: stop mirroring). Clients are still answered by the weights only."""
        ...

    def shadow_observations(self, environment: str) -> ShadowObservations | None:
        """What the current mirror session observed (None when nothing is mirrored)."""
        ...
