"""The statistics a canary step decides with: Wald's sequential test of the candidate's
error rate (``Sprt``), the baseline comparison (``blames_candidate``), the latency bound
and the 4xx comparison (``client_error_problem``)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.rollout import ErrorRate


class Verdict(enum.StrEnum):
    """What the sequential test says after a reading."""

    BAD = "bad"
    HEALTHY = "healthy"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class Sprt:
    """Wald's sequential probability ratio test of a binomial error rate.

    H0: rate = ``p0`` (healthy) against H1: rate = ``p1`` (bad). After ``n`` requests with
    ``e`` errors the log likelihood ratio is ``e log(p1/p0) + (n-e) log((1-p1)/(1-p0))``;
    at or above ``log((1-beta)/alpha)`` the data show the rate is bad, at or below
    ``log(beta/(1-alpha))`` they show it is healthy. Wald's bounds hold whenever the test
    looks, so reading it every second costs nothing in error rates.
    """

    p0: float
    p1: float
    alpha: float  # chance of "bad" when the rate is p0
    beta: float  # chance of "healthy" when the rate is p1

    @classmethod
    def from_config(cls, config: CanaryConfig) -> Sprt:
        """The test ``config`` asks for: p0, p1 = bound / ratio, bound * ratio."""
        bound, ratio = config.max_error_rate, config.sprt_ratio
        return cls(
            bound / ratio,
            min(bound * ratio, 0.999),
            config.false_rollback_rate,
            config.missed_breach_rate,
        )

    @property
    def upper(self) -> float:
        """The log likelihood ratio at which the rate is shown to be bad."""
        return math.log((1.0 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """The log likelihood ratio at which the rate is shown to be healthy."""
        return math.log(self.beta / (1.0 - self.alpha))

    def llr(self, requests: float, errors: float) -> float:
        """Log likelihood ratio of H1 to H0 after ``requests`` with ``errors``."""
        ok = max(requests - errors, 0.0)
        return errors * math.log(self.p1 / self.p0) + ok * math.log(
            (1.0 - self.p1) / (1.0 - self.p0)
        )

    def verdict(self, requests: float, errors: float) -> Verdict:
        """BAD, HEALTHY or UNDECIDED for these counts."""
        llr = self.llr(requests, errors)
        if llr >= self.upper:
            return Verdict.BAD
        if llr <= self.lower:
            return Verdict.HEALTHY
        return Verdict.UNDECIDED

    def requests_to_pass(self) -> int:
        """Error-free requests it takes to show a candidate healthy."""
        return math.ceil(self.lower / math.log((1.0 - self.p1) / (1.0 - self.p0)))


def _z(e1: float, n1: float, e2: float, n2: float) -> float:
    """One-sided two-proportion z statistic of rate e1/n1 above e2/n2."""
    pooled = (e1 + e2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / n1 + 1.0 / n2))
    return (e1 / n1 - e2 / n2) / se


def blames_candidate(candidate: ErrorRate, baseline: ErrorRate | None, z: float) -> bool:
    """True unless the baseline fails about as much as the candidate in the same window.

    A one-sided two-proportion z test: the candidate is blamed when its error rate is
    above the baseline's by at least ``z`` standard errors, or when the baseline has no
    rate to compare (no data is no excuse).
    """
    if baseline is None or baseline.error_rate is None or baseline.request_count <= 0:
        return True
    n1, n2 = candidate.request_count, baseline.request_count
    return _z(candidate.error_count, n1, baseline.error_count, n2) >= z


def latency_problem(candidate: ErrorRate, baseline: ErrorRate | None, config: CanaryConfig) -> str:
    """Why the candidate's p95 latency breaks the bound ('' when it does not or cannot
    be compared: check off, too few requests, or a side without a p95)."""
    if config.max_latency_ratio <= 0 or baseline is None:
        return ""
    ours, theirs = candidate.latency_p95_seconds, baseline.latency_p95_seconds
    if ours is None or theirs is None or candidate.request_count < config.latency_min_requests:
        return ""
    bound = theirs * config.max_latency_ratio + config.latency_slack_seconds
    if ours <= bound:
        return ""
    return (
        f"p95 latency {ours * 1000:.0f} ms > {bound * 1000:.0f} ms (baseline p95 "
        f"{theirs * 1000:.0f} ms x {config.max_latency_ratio:g} + "
        f"{config.latency_slack_seconds * 1000:.0f} ms)"
    )


def client_error_problem(
    candidate: ErrorRate, baseline: ErrorRate | None, config: CanaryConfig
) -> str:
    """Why the candidate's 4xx share is worse than the baseline's ('' when it is not, or
    cannot be compared: check off, too few requests, or a side without a 4xx share).

    Worse means above the baseline's share by more than ``max_client_error_increase`` and
    by ``baseline_z`` standard errors (the same one-sided two-proportion z test as
    ``blames_candidate``): a candidate refusing requests the baseline scores (a field it
    now requires, a value it now refuses) would fail those clients once promoted.
    """
    if config.max_client_error_increase >= 1.0 or baseline is None:
        return ""
    ours, theirs = candidate.client_error_rate, baseline.client_error_rate
    n1, n2 = candidate.request_count, baseline.request_count
    if ours is None or theirs is None or n2 <= 0 or n1 < config.client_error_min_requests:
        return ""
    if ours <= theirs + config.max_client_error_increase:
        return ""
    z = _z(candidate.client_error_count, n1, baseline.client_error_count, n2)
    if z < config.baseline_z:
        return ""
    return (
        f"4xx rate {ours:.2%} over {n1:.0f} requests > baseline {theirs:.2%} over "
        f"{n2:.0f} + {config.max_client_error_increase:.2%} (z {z:.1f} >= "
        f"{config.baseline_z:g}): the candidate refuses requests the baseline scores"
    )
