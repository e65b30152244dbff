"""The canary controller: an explicit rollout state machine over any ``DeploymentTarget``.

Modelled on Flagger / Argo Rollouts. A rollout moves through these states::

    pending ──► progressing ──► analysing ──► progressing (next step) ... ──► promoting ──► succeeded
                                   │  (one analysing row per reading)
                                   ├── the test shows the rate above the bound, p95 latency
                                   │   above the bound, or the candidate/router died ─► rolled_back
                                   └── undecided when the step's time ran out, no data,
                                       metrics unreachable, or the baseline fails as
                                       much as the candidate (shared dependency) ──────► aborted

At each step (``analysis="sequential"``, the default) the candidate's requests and errors
since the step began are read every ``interval_seconds`` and fed to Wald's sequential
probability ratio test (``Sprt``) of "rate = max_error_rate / sprt_ratio" against "rate =
max_error_rate * sprt_ratio": the step rolls back as soon as the counts show the rate is
above the bound, passes as soon as they show it is below, and aborts when
``analysis_window_seconds`` run out undecided. Before blaming the candidate its rate is
compared with the baseline's over the same window (``blames_candidate``); the candidate's
p95 latency is compared with the baseline's when a step passes. ``analysis="count"`` keeps
the earlier rule (a reading above the bound with ``breach_min_requests`` rolls back, a
window end with ``min_requests`` passes) for comparison.

``rolled_back`` and ``aborted`` both put 100% of the traffic back on the baseline;
they differ in cause: a breach is evidence that the candidate is bad, an abort only
says the analysis could not show it is good. The caller retires the candidate.

Every reading and every transition is recorded (``Transition``) with its time, the
weights after it, the candidate's and the baseline's readings and the test statistic,
and a sentence saying why, so the Dagster run log and asset metadata read like a Flagger
event stream. Pure logic: no Dagster, MLflow or Kubernetes; time is injected (``sleep``,
``clock``) so tests run instantly.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from churn_platform.core.rollout import (
    DeploymentTarget,
    EnvironmentState,
    ErrorRate,
    MetricsSource,
    ServedVersion,
)

__all__ = [
    "UNREACHABLE",
    "CanaryConfig",
    "CanaryResult",
    "CanaryState",
    "Sprt",
    "Transition",
    "Verdict",
    "blames_candidate",
    "latency_problem",
    "release_line",
    "run_canary",
]


# Metrics sources start ``ErrorRate.reason`` with this when they could not be reached.
UNREACHABLE = "metrics source unreachable"


class CanaryState(enum.StrEnum):
    """Where a rollout is. The last three are terminal."""

    PENDING = "pending"
    PROGRESSING = "progressing"
    ANALYSING = "analysing"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        """True for ``succeeded``, ``rolled_back`` and ``aborted``."""
        return self in (CanaryState.SUCCEEDED, CanaryState.ROLLED_BACK, CanaryState.ABORTED)


AnalysisMode = Literal["sequential", "count"]
ANALYSIS_MODES: tuple[str, ...] = ("sequential", "count")


@dataclass(frozen=True)
class CanaryConfig:
    """How a canary rollout proceeds and when it is judged bad (see the module docstring)."""

    steps: tuple[int, ...] = field(
        default=(5, 25, 100),
        metadata={
            "description": "Candidate traffic percent at each step, strictly increasing, "
            "ending at 100."
        },
    )
    analysis_window_seconds: float = field(
        default=90.0,
        metadata={
            "description": "Longest time a step is observed. 'sequential': a step ends as soon "
            "as the test decides; undecided at this time -> abort with the counts. 'count': "
            "the fixed window (and metrics look-back) of every step."
        },
    )
    interval_seconds: float = field(
        default=1.0, metadata={"description": "Time between metric readings inside a step."}
    )
    max_error_rate: float = field(
        default=0.05,
        metadata={
            "description": "The error-rate bound (share of requests failed by the server: 5xx "
            "or not reachable through the router; 4xx excluded). 0.05 = 5%."
        },
    )
    analysis: AnalysisMode = field(
        default="sequential",
        metadata={
            "description": "'sequential' (default): a sequential probability ratio test on "
            "the candidate's counts at each step; 'count': the earlier rule, a reading above "
            "max_error_rate with breach_min_requests requests rolls back, a window end with "
            "min_requests passes."
        },
    )
    sprt_ratio: float = field(
        default=2.0,
        metadata={
            "description": "The sequential test weighs 'rate = max_error_rate / ratio' "
            "(healthy) against 'rate = max_error_rate * ratio' (bad): the band around the "
            "bound where it takes its time."
        },
    )
    false_rollback_rate: float = field(
        default=0.01,
        metadata={
            "description": "Sequential test: chance per step of rolling back a candidate "
            "whose true rate is max_error_rate / sprt_ratio (far less for a healthier one)."
        },
    )
    missed_breach_rate: float = field(
        default=0.05,
        metadata={
            "description": "Sequential test: chance per step of advancing a candidate whose "
            "true rate is max_error_rate * sprt_ratio."
        },
    )
    baseline_z: float = field(
        default=2.33,
        metadata={
            "description": "A breaching candidate is blamed only when its rate is above the "
            "baseline's by this many standard errors (two-proportion z); otherwise the "
            "baseline fails as much (a shared dependency) and the release aborts."
        },
    )
    max_latency_ratio: float = field(
        default=2.0,
        metadata={
            "description": "Latency bound: candidate p95 <= baseline p95 * ratio + "
            "latency_slack_seconds, checked when a step passes (0 turns it off)."
        },
    )
    latency_slack_seconds: float = field(
        default=0.1,
        metadata={"description": "Absolute allowance added to the latency bound, seconds."},
    )
    latency_min_requests: int = field(
        default=20,
        metadata={"description": "Canary requests needed before its p95 is compared."},
    )
    min_requests: int = field(
        default=0,
        metadata={
            "description": "Requests the candidate must have served in a step for it to pass "
            "(in 'sequential' the test already needs enough; 'count' used 20)."
        },
    )
    breach_min_requests: int = field(
        default=5,
        metadata={"description": "'count' mode: requests a breaching reading must rest on."},
    )
    max_unreachable_readings: int | None = field(
        default=5,
        metadata={
            "description": "Abort after this many readings in a row where the metrics source "
            "could not be reached (None: only judge at the step's end)."
        },
    )

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise ValueError(
                "CanaryConfig.steps is empty; give traffic percents such as (5, 25, 100)"
            )
        for s in steps:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 100:
                raise ValueError(
                    f"CanaryConfig.steps must be whole percents in 1..100, got {s!r} in {steps}"
                )
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"CanaryConfig.steps must be strictly increasing, got {steps}")
        if steps[-1] != 100:
            raise ValueError(
                f"CanaryConfig.steps must end at 100 so the candidate is fully promoted, got {steps}"
            )
        if not (self.analysis_window_seconds > 0 and math.isfinite(self.analysis_window_seconds)):
            raise ValueError(
                "CanaryConfig.analysis_window_seconds must be a positive number of seconds, "
                f"got {self.analysis_window_seconds!r}"
            )
        if not (self.interval_seconds > 0 and math.isfinite(self.interval_seconds)):
            raise ValueError(
                f"CanaryConfig.interval_seconds must be positive, got {self.interval_seconds!r}"
            )
        if self.interval_seconds > self.analysis_window_seconds:
            raise ValueError(
                f"CanaryConfig.interval_seconds ({self.interval_seconds}) must not exceed "
                f"analysis_window_seconds ({self.analysis_window_seconds}); lower the interval"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(
                "CanaryConfig.max_error_rate is a share of requests in [0, 1] (0.05 = 5%), "
                f"got {self.max_error_rate!r}"
            )
        if self.analysis not in ANALYSIS_MODES:
            raise ValueError(
                f"CanaryConfig.analysis must be one of {ANALYSIS_MODES}, got {self.analysis!r}"
            )
        if self.analysis == "sequential" and not 0.0 < self.max_error_rate < 0.5:
            raise ValueError(
                "CanaryConfig.max_error_rate must be in (0, 0.5) for the sequential test, got "
                f"{self.max_error_rate!r}; use analysis='count' for a zero-error bound"
            )
        if not (self.sprt_ratio > 1.0 and math.isfinite(self.sprt_ratio)):
            raise ValueError(f"CanaryConfig.sprt_ratio must be > 1, got {self.sprt_ratio!r}")
        for name in ("false_rollback_rate", "missed_breach_rate"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"CanaryConfig.{name} must be in (0, 0.5), got {value!r}")
        if not (self.baseline_z >= 0 and math.isfinite(self.baseline_z)):
            raise ValueError(f"CanaryConfig.baseline_z must be >= 0, got {self.baseline_z!r}")
        if not (self.max_latency_ratio >= 0 and math.isfinite(self.max_latency_ratio)):
            raise ValueError(
                "CanaryConfig.max_latency_ratio must be >= 0 (0 turns the latency check off), "
                f"got {self.max_latency_ratio!r}"
            )
        if not self.latency_slack_seconds >= 0:
            raise ValueError(
                f"CanaryConfig.latency_slack_seconds must be >= 0, got {self.latency_slack_seconds}"
            )
        if self.min_requests < 0:
            raise ValueError(f"CanaryConfig.min_requests must be >= 0, got {self.min_requests}")
        if self.breach_min_requests < 0:
            raise ValueError(
                f"CanaryConfig.breach_min_requests must be >= 0, got {self.breach_min_requests}"
            )
        if self.latency_min_requests < 0:
            raise ValueError(
                f"CanaryConfig.latency_min_requests must be >= 0, got {self.latency_min_requests}"
            )
        if self.max_unreachable_readings is not None and self.max_unreachable_readings < 1:
            raise ValueError(
                "CanaryConfig.max_unreachable_readings must be >= 1 or None, "
                f"got {self.max_unreachable_readings}"
            )


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


def blames_candidate(candidate: ErrorRate, baseline: ErrorRate | None, z: float) -> bool:
    """True unless the baseline fails about as much as the candidate in the same window.

    A one-sided two-proportion z test: the candidate is blamed when its error rate is
    above the baseline's by at least ``z`` standard errors, or when the baseline has no
    rate to compare (no data is no excuse).
    """
    if baseline is None or baseline.error_rate is None or baseline.request_count <= 0:
        return True
    n1, n2 = candidate.request_count, baseline.request_count
    e1, e2 = candidate.error_count, baseline.error_count
    pooled = (e1 + e2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / n1 + 1.0 / n2))
    return (e1 / n1 - e2 / n2) / se >= z


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


@dataclass(frozen=True)
class Transition:
    """One state change of a rollout, with the evidence that caused it.

    at: the controller's clock (monotonic seconds) when it happened.
    wall_time: Unix time of the same moment, for humans and logs.
    weights: traffic percent per version after the transition.
    reading: the metric reading that caused it, when one did.
    """

    at: float
    wall_time: float
    from_state: CanaryState
    to_state: CanaryState
    weights: dict[str, int]
    reading: ErrorRate | None
    reason: str
    step: int | None = None  # candidate percent of the step this belongs to
    baseline_reading: ErrorRate | None = None  # the baseline over the same window
    llr: float | None = None  # the sequential test's log likelihood ratio at this reading

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view (for Dagster metadata and logs)."""
        return {
            "at": self.at,
            "wall_time": self.wall_time,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "step": self.step,
            "weights": dict(self.weights),
            "reading": _reading_dict(self.reading),
            "baseline_reading": _reading_dict(self.baseline_reading),
            "llr": self.llr,
            "reason": self.reason,
        }


def _reading_dict(reading: ErrorRate | None) -> dict[str, object] | None:
    if reading is None:
        return None
    return {
        "version": reading.version,
        "error_rate": reading.error_rate,
        "request_count": reading.request_count,
        "latency_p95_seconds": reading.latency_p95_seconds,
        "query": reading.query,
        "reason": reading.reason,
    }


def _rate_cell(reading: ErrorRate | None) -> str:
    if reading is None:
        return ""
    rate = "n/a" if reading.error_rate is None else f"{reading.error_rate:.4f}"
    p95 = (
        ""
        if reading.latency_p95_seconds is None
        else f", p95 {reading.latency_p95_seconds * 1000:.0f} ms"
    )
    return f"{rate} of {reading.request_count:.0f}{p95}"


@dataclass
class CanaryResult:
    """The outcome of ``run_canary``.

    rollback_seconds: from the moment the controller decided to roll back (breach
    detected, or analysis failed) until the target confirmed 100% on the baseline;
    None when nothing was rolled back.
    """

    status: CanaryState
    environment: str
    candidate: str
    baseline: str | None
    transitions: list[Transition] = field(default_factory=list)
    final_weights: dict[str, int] = field(default_factory=dict)
    rollback_seconds: float | None = None
    reason: str = ""

    @property
    def promoted(self) -> bool:
        """True when the candidate ended at 100% of the traffic."""
        return self.status is CanaryState.SUCCEEDED

    @property
    def breach(self) -> Transition | None:
        """The transition into ``rolled_back``, if the rollout was rolled back."""
        for t in self.transitions:
            if t.to_state is CanaryState.ROLLED_BACK:
                return t
        return None

    def as_markdown(self) -> str:
        """The transition log, every reading included, as a markdown table."""
        t0 = self.transitions[0].at if self.transitions else 0.0
        lines = [
            "| t (s) | from | to | weights | candidate errors | baseline errors | LLR | reason |",
            "|---:|---|---|---|---:|---:|---:|---|",
        ]
        for t in self.transitions:
            weights = ", ".join(f"{v}: {w}%" for v, w in t.weights.items())
            reason = t.reason.replace("|", "\\|")
            llr = "" if t.llr is None else f"{t.llr:+.2f}"
            lines.append(
                f"| {t.at - t0:.2f} | {t.from_state.value} | {t.to_state.value} | {weights} "
                f"| {_rate_cell(t.reading)} | {_rate_cell(t.baseline_reading)} | {llr} "
                f"| {reason} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line for a CLI or log: the outcome in words and why."""
        words = {
            CanaryState.SUCCEEDED: "released",
            CanaryState.ROLLED_BACK: "rolled back",
            CanaryState.ABORTED: "aborted",
        }.get(self.status, self.status.value)
        return f"canary of version {self.candidate}: {words} - {self.reason}"

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view of the whole result."""
        return {
            "status": self.status.value,
            "environment": self.environment,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "final_weights": dict(self.final_weights),
            "rollback_seconds": self.rollback_seconds,
            "reason": self.reason,
            "transitions": [t.as_dict() for t in self.transitions],
        }


class _Recorder:
    """Holds the current state and appends transitions; the only place state changes."""

    def __init__(
        self,
        result: CanaryResult,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_transition: Callable[[Transition], None] | None,
    ) -> None:
        self.result = result
        self.state = CanaryState.PENDING
        self.weights: dict[str, int] = {}
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_transition = on_transition

    def move(
        self,
        to_state: CanaryState,
        reason: str,
        *,
        reading: ErrorRate | None = None,
        step: int | None = None,
        baseline_reading: ErrorRate | None = None,
        llr: float | None = None,
    ) -> Transition:
        t = Transition(
            at=self._clock(),
            wall_time=self._wall_clock(),
            from_state=self.state,
            to_state=to_state,
            weights=dict(self.weights),
            reading=reading,
            reason=reason,
            step=step,
            baseline_reading=baseline_reading,
            llr=llr,
        )
        self.state = to_state
        self.result.transitions.append(t)
        self.result.status = to_state
        if to_state.terminal:
            self.result.reason = reason
            self.result.final_weights = dict(self.weights)
        if self._on_transition is not None:
            self._on_transition(t)
        return t


def _describe(reading: ErrorRate) -> str:
    if reading.error_rate is None:
        return f"no error rate ({reading.reason or 'no data'})"
    return f"error rate {reading.error_rate:.2%} over {reading.request_count:.0f} requests"


def _read(metrics: MetricsSource, version: str, window: float) -> ErrorRate:
    """One reading; an exception from the source becomes a reading with the reason."""
    try:
        return metrics.error_rate(version, window)
    except Exception as exc:  # a metrics outage must not crash the rollout mid-way
        return ErrorRate(
            version=version,
            error_rate=None,
            request_count=0.0,
            query="",
            reason=f"{UNREACHABLE}: {type(exc).__name__}: {exc}",
        )


def _default_health(state: EnvironmentState, candidate: str) -> bool:
    return any(v.version == candidate for v in state.versions)


def run_canary(
    target: DeploymentTarget,
    metrics: MetricsSource,
    environment: str,
    candidate: str,
    baseline: str | None,
    config: CanaryConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    on_transition: Callable[[Transition], None] | None = None,
    health_check: Callable[[ServedVersion], bool] | None = None,
) -> CanaryResult:
    """Roll ``candidate`` out in ``environment`` step by step, rolling back on a breach.

    Both versions must already be deployed (``target.deploy``). At each step the
    weights become ``{candidate: step, baseline: 100 - step}`` and the step is analysed
    per ``config.analysis`` (module docstring): it ends in a pass, a rollback (the
    evidence shows the candidate is bad, or its server or the router died) or an abort
    with the reason (undecided in time, no data, or the baseline failing as much).

    With ``baseline=None`` (first deployment ever) the candidate gets 100% once
    ``health_check`` (default: the target lists it) passes.

    ``on_transition`` is called with each ``Transition`` as it happens (e.g. to log it
    in Dagster). Returns the ``CanaryResult``; it raises only for caller mistakes (a
    version not deployed) or when the target cannot restore the baseline's traffic.
    """
    if not candidate:
        raise ValueError("run_canary needs a candidate version, e.g. '4'")
    if baseline is not None and baseline == candidate:
        raise ValueError(
            f"candidate and baseline are both {candidate!r}; pass baseline=None for a first "
            "deployment or the version currently serving traffic"
        )
    state = target.state(environment)
    running = {v.version: v for v in state.versions}
    if candidate not in running:
        raise ValueError(
            f"candidate version {candidate!r} is not running in {environment!r} "
            f"(running: {sorted(running) or 'none'}); call target.deploy() first"
        )
    if baseline is not None and baseline not in running:
        raise ValueError(
            f"baseline version {baseline!r} is not running in {environment!r} "
            f"(running: {sorted(running)}); deploy it or pass baseline=None"
        )

    result = CanaryResult(
        status=CanaryState.PENDING,
        environment=environment,
        candidate=candidate,
        baseline=baseline,
    )
    rec = _Recorder(result, clock, wall_clock, on_transition)
    rec.weights = state.weights()

    if baseline is None:
        return _first_deployment(target, environment, running[candidate], rec, health_check)

    baseline_weights = {candidate: 0, baseline: 100}
    has_router = state.endpoint is not None  # then a router that vanishes is a breach

    def roll_back(
        to_state: CanaryState,
        reason: str,
        reading: ErrorRate | None,
        step: int,
        baseline_reading: ErrorRate | None = None,
    ) -> None:
        decided = clock()
        target.set_weights(environment, baseline_weights)
        result.rollback_seconds = clock() - decided
        rec.weights = dict(baseline_weights)
        rec.move(
            to_state,
            f"{reason}; traffic back on {baseline}",
            reading=reading,
            step=step,
            baseline_reading=baseline_reading,
        )

    for step in config.steps:
        weights = {candidate: step, baseline: 100 - step}
        try:
            target.set_weights(environment, weights)
        except Exception as exc:
            roll_back(
                CanaryState.ABORTED,
                f"could not set weights {weights}: {type(exc).__name__}: {exc}",
                None,
                step,
            )
            return result
        rec.weights = dict(weights)
        rec.move(
            CanaryState.PROGRESSING,
            f"step {step}%: candidate {candidate} at {step}%, baseline {baseline} at {100 - step}%",
            step=step,
        )
        rec.move(
            CanaryState.ANALYSING,
            f"analysing {candidate} ({config.analysis}): at most "
            f"{config.analysis_window_seconds:g}s, a reading every {config.interval_seconds:g}s",
            step=step,
        )

        if config.analysis == "count":
            outcome = _count_step(
                target, metrics, environment, candidate, config, step, clock, sleep, has_router
            )
        else:
            outcome = _sequential_step(
                target,
                metrics,
                environment,
                candidate,
                baseline,
                config,
                step,
                clock,
                sleep,
                rec,
                has_router,
            )
        if outcome.to_state is not None:
            roll_back(
                outcome.to_state, outcome.reason, outcome.reading, step, outcome.baseline_reading
            )
            return result
        passed_state = CanaryState.PROMOTING if step == 100 else CanaryState.PROGRESSING
        rec.move(
            passed_state,
            outcome.reason,
            reading=outcome.reading,
            step=step,
            baseline_reading=outcome.baseline_reading,
            llr=outcome.llr,
        )

    rec.move(
        CanaryState.SUCCEEDED,
        f"candidate {candidate} serves 100%; baseline {baseline} kept at 0% for rollback",
        step=100,
    )
    return result


@dataclass(frozen=True)
class _StepOutcome:
    """How one step's analysis ended: passed (``to_state`` None) or not, and why."""

    to_state: CanaryState | None
    reason: str
    reading: ErrorRate | None
    baseline_reading: ErrorRate | None = None
    llr: float | None = None


def _process_problem(
    target: DeploymentTarget, environment: str, candidate: str, router_expected: bool
) -> str:
    """'' while the candidate and the router run; else what died (a breach: its traffic
    fails until the weights move). ``router_expected``: the environment had an endpoint
    when the rollout began (a target without one, e.g. Kubernetes without a configured
    endpoint, is not judged on it)."""
    try:
        state = target.state(environment)
    except Exception as exc:  # the target's own store failing is not the canary's fault
        return f"could not read the {environment} state: {type(exc).__name__}: {exc}"
    if candidate not in {v.version for v in state.versions}:
        return f"candidate {candidate}'s server is not running (process died or not ready)"
    if router_expected and state.endpoint is None:
        return f"the {environment} router is not running"
    return ""


def _count_step(
    target: DeploymentTarget,
    metrics: MetricsSource,
    environment: str,
    candidate: str,
    config: CanaryConfig,
    step: int,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    router_expected: bool,
) -> _StepOutcome:
    """The earlier rule: fixed window; a reading above the bound (with at least
    ``breach_min_requests``) rolls back; the last reading needs ``min_requests``."""
    start = clock()
    unreachable = 0
    while True:
        dead = _process_problem(target, environment, candidate, router_expected)
        if dead:
            return _StepOutcome(CanaryState.ROLLED_BACK, f"breach at step {step}%: {dead}", None)
        reading = _read(metrics, candidate, config.analysis_window_seconds)
        if (
            reading.error_rate is not None
            and reading.error_rate > config.max_error_rate
            and reading.request_count >= config.breach_min_requests
        ):
            return _StepOutcome(
                CanaryState.ROLLED_BACK,
                f"breach at step {step}%: {_describe(reading)} > max {config.max_error_rate:.2%}",
                reading,
            )
        unreachable, gone = _count_unreachable(unreachable, reading, config)
        if gone:
            return _StepOutcome(CanaryState.ABORTED, gone, reading)
        remaining = config.analysis_window_seconds - (clock() - start)
        if remaining <= 1e-9:
            break
        sleep(min(config.interval_seconds, remaining))
    problem = _analysis_problem(reading, config)
    if problem:
        return _StepOutcome(
            CanaryState.ABORTED, f"not promoting at step {step}%: {problem}", reading
        )
    return _StepOutcome(
        None, f"step {step}% passed: {_describe(reading)} <= {config.max_error_rate:.2%}", reading
    )


def _sequential_step(
    target: DeploymentTarget,
    metrics: MetricsSource,
    environment: str,
    candidate: str,
    baseline: str,
    config: CanaryConfig,
    step: int,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    rec: _Recorder,
    router_expected: bool,
) -> _StepOutcome:
    """Read the candidate and the baseline every interval since the step began; decide
    with the sequential test as soon as the counts allow; record every reading."""
    test = Sprt.from_config(config)
    start = clock()
    unreachable = 0
    reading: ErrorRate | None = None
    base: ErrorRate | None = None
    llr: float | None = None
    while True:
        dead = _process_problem(target, environment, candidate, router_expected)
        if dead:
            return _StepOutcome(CanaryState.ROLLED_BACK, f"breach at step {step}%: {dead}", reading)
        # the look-back covers the step so far: the test sees this step's counts only
        window = max(clock() - start, config.interval_seconds)
        reading = _read(metrics, candidate, window)
        base = _read(metrics, baseline, window)
        llr = None
        verdict = Verdict.UNDECIDED
        if reading.error_rate is not None:
            llr = test.llr(reading.request_count, reading.error_count)
            verdict = test.verdict(reading.request_count, reading.error_count)
        rec.move(
            CanaryState.ANALYSING,
            f"reading at step {step}%: {_describe(reading)}; baseline {_describe(base)}; "
            f"test {verdict.value}",
            reading=reading,
            step=step,
            baseline_reading=base,
            llr=llr,
        )
        llr_text = "n/a" if llr is None else f"{llr:+.2f}"
        bounds = (
            f"LLR {llr_text}, bounds {test.lower:+.2f}/{test.upper:+.2f}; "
            f"rate {test.p0:.2%} vs {test.p1:.2%}"
        )
        if verdict is Verdict.BAD:
            if blames_candidate(reading, base, config.baseline_z):
                return _StepOutcome(
                    CanaryState.ROLLED_BACK,
                    f"breach at step {step}%: {_describe(reading)} shows a rate above the "
                    f"bound {config.max_error_rate:.2%} ({bounds}); baseline {_describe(base)}",
                    reading,
                    base,
                    llr,
                )
            return _StepOutcome(
                CanaryState.ABORTED,
                f"not blaming the candidate at step {step}%: the baseline fails as much "
                f"({_describe(base)} vs candidate {_describe(reading)}); a shared dependency "
                "may be down, so the release stops with traffic back on the baseline",
                reading,
                base,
                llr,
            )
        if verdict is Verdict.HEALTHY and reading.request_count >= config.min_requests:
            slow = latency_problem(reading, base, config)
            if slow:
                return _StepOutcome(
                    CanaryState.ROLLED_BACK, f"breach at step {step}%: {slow}", reading, base, llr
                )
            return _StepOutcome(
                None,
                f"step {step}% passed: {_describe(reading)} shows a rate below the bound "
                f"{config.max_error_rate:.2%} ({bounds})",
                reading,
                base,
                llr,
            )
        unreachable, gone = _count_unreachable(unreachable, reading, config)
        if gone:
            return _StepOutcome(CanaryState.ABORTED, gone, reading, base, llr)
        remaining = config.analysis_window_seconds - (clock() - start)
        if remaining <= 1e-9:
            break
        sleep(min(config.interval_seconds, remaining))
    if reading.error_rate is None:
        why = reading.reason or "no data from the metrics source"
    else:
        why = (
            f"undecided after {config.analysis_window_seconds:g}s: {_describe(reading)} "
            f"({bounds}); a healthy candidate needs about {test.requests_to_pass()} "
            "error-free requests: raise analysis_window_seconds or the traffic"
        )
    return _StepOutcome(
        CanaryState.ABORTED, f"not promoting at step {step}%: {why}", reading, base, llr
    )


def _count_unreachable(count: int, reading: ErrorRate, config: CanaryConfig) -> tuple[int, str]:
    """The run of unreachable readings so far, and why to abort once it is too long ('' if not)."""
    count = count + 1 if reading.reason.startswith(UNREACHABLE) else 0
    limit = config.max_unreachable_readings
    if limit is not None and count >= limit:
        return count, f"not promoting: {count} readings in a row failed ({reading.reason})"
    return count, ""


def _analysis_problem(reading: ErrorRate, config: CanaryConfig) -> str:
    """Why the final reading of a window cannot justify promotion ('' when it can)."""
    if reading.error_rate is None:
        return reading.reason or "no data from the metrics source"
    if reading.request_count < config.min_requests:
        return f"only {reading.request_count:.0f} requests, need {config.min_requests}"
    return ""


def _first_deployment(
    target: DeploymentTarget,
    environment: str,
    served: ServedVersion,
    rec: _Recorder,
    health_check: Callable[[ServedVersion], bool] | None,
) -> CanaryResult:
    """No baseline exists: health-check the candidate, then give it all the traffic."""
    candidate = served.version
    try:
        healthy = (
            health_check(served)
            if health_check is not None
            else _default_health(target.state(environment), candidate)
        )
        detail = "" if healthy else "health check returned False"
    except Exception as exc:
        healthy, detail = False, f"{type(exc).__name__}: {exc}"
    if not healthy:
        rec.move(
            CanaryState.ABORTED,
            f"first deployment of {candidate}: health check failed ({detail}); traffic unchanged",
            step=100,
        )
        return rec.result
    weights = {candidate: 100}
    target.set_weights(environment, weights)
    rec.weights = weights
    rec.move(
        CanaryState.PROMOTING,
        f"first deployment: no baseline, {candidate} is healthy and goes straight to 100%",
        step=100,
    )
    rec.move(
        CanaryState.SUCCEEDED, f"candidate {candidate} serves 100% (first deployment)", step=100
    )
    return rec.result


_RELEASE_WORDS = {
    "promoted": "released",
    CanaryState.SUCCEEDED.value: "released",
    CanaryState.ROLLED_BACK.value: "ROLLED BACK",
    CanaryState.ABORTED.value: "ABORTED",
    "none": "nothing released",
}


def release_line(output: Mapping[str, Any]) -> str:
    """The CLI's line for a ``production_deployment`` output (``action``, ``candidate``,
    ``reason``): a run that rolled back or aborted says so, with the reason, even though
    the run itself succeeded."""
    action = str(output.get("action", "none"))
    words = _RELEASE_WORDS.get(action, action)
    candidate = output.get("candidate")
    who = f" v{candidate}" if candidate and action != "none" else ""
    reason = output.get("reason") or ""
    return f"release{who}: {words}" + (f" - {reason}" if reason else "")


def steps_summary(steps: Sequence[int]) -> str:
    """'5% -> 25% -> 100%' for logs and descriptions."""
    return " -> ".join(f"{s}%" for s in steps)
