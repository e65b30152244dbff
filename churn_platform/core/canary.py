"""The canary controller: an explicit rollout state machine over any ``DeploymentTarget``.

Modelled on Flagger / Argo Rollouts. A rollout moves through these states::

    pending ──► progressing ──► analysing ──► progressing (next step) ... ──► promoting ──► succeeded
                                   │
                                   ├── error rate above the bound ─────────► rolled_back
                                   └── no data / too few requests /
                                       metrics unreachable at window end ──► aborted

``rolled_back`` and ``aborted`` both put 100% of the traffic back on the baseline;
they differ in cause: a breach is evidence that the candidate is bad, an abort only
says the analysis could not show it is good. The caller retires the candidate.

Every transition is recorded (``Transition``) with its time, the weights after it,
the metric reading that caused it and a sentence saying why, so the Dagster run log
and asset metadata read like a Flagger event stream. Pure logic: no Dagster, MLflow
or Kubernetes; time is injected (``sleep``, ``clock``) so tests run instantly.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    "Transition",
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


@dataclass(frozen=True)
class CanaryConfig:
    """How a canary rollout proceeds and when it is judged bad.

    steps: candidate traffic percent at each step, strictly increasing, ending at 100.
    analysis_window_seconds: how long each step is observed (and the metrics look-back).
    interval_seconds: time between metric readings inside a window.
    max_error_rate: a reading above this (5xx share, 0..1) is a breach -> immediate rollback.
    min_requests: requests the candidate must have served in the window for the step
        to pass; fewer means "not enough evidence" -> abort, never promote.
    breach_min_requests: a reading only counts as a breach when it rests on at least
        this many requests, so one early 500 out of two requests does not roll back.
    max_unreachable_readings: abort early after this many consecutive readings where the
        metrics source could not be reached (None: only judge at the window's end).
    """

    steps: tuple[int, ...] = (5, 25, 100)
    analysis_window_seconds: float = 15.0
    interval_seconds: float = 1.0
    max_error_rate: float = 0.05
    min_requests: int = 20
    breach_min_requests: int = 5
    max_unreachable_readings: int | None = None

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
        if self.min_requests < 0:
            raise ValueError(f"CanaryConfig.min_requests must be >= 0, got {self.min_requests}")
        if self.breach_min_requests < 0:
            raise ValueError(
                f"CanaryConfig.breach_min_requests must be >= 0, got {self.breach_min_requests}"
            )
        if self.max_unreachable_readings is not None and self.max_unreachable_readings < 1:
            raise ValueError(
                "CanaryConfig.max_unreachable_readings must be >= 1 or None, "
                f"got {self.max_unreachable_readings}"
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

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view (for Dagster metadata and logs)."""
        reading = None
        if self.reading is not None:
            reading = {
                "version": self.reading.version,
                "error_rate": self.reading.error_rate,
                "request_count": self.reading.request_count,
                "query": self.reading.query,
                "reason": self.reading.reason,
            }
        return {
            "at": self.at,
            "wall_time": self.wall_time,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "step": self.step,
            "weights": dict(self.weights),
            "reading": reading,
            "reason": self.reason,
        }


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
        """The transition log as a markdown table (for Dagster metadata)."""
        t0 = self.transitions[0].at if self.transitions else 0.0
        lines = [
            "| t (s) | from | to | weights | error rate | requests | reason |",
            "|---:|---|---|---|---:|---:|---|",
        ]
        for t in self.transitions:
            rate = count = ""
            if t.reading is not None:
                rate = "n/a" if t.reading.error_rate is None else f"{t.reading.error_rate:.4f}"
                count = f"{t.reading.request_count:.0f}"
            weights = ", ".join(f"{v}: {w}%" for v, w in t.weights.items())
            reason = t.reason.replace("|", "\\|")
            lines.append(
                f"| {t.at - t0:.2f} | {t.from_state.value} | {t.to_state.value} | {weights} "
                f"| {rate} | {count} | {reason} |"
            )
        return "\n".join(lines)

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
    weights become ``{candidate: step, baseline: 100 - step}``; the candidate's error
    rate is read at the step's start and every ``interval_seconds`` until
    ``analysis_window_seconds`` have passed. A reading above ``max_error_rate`` (with
    at least ``breach_min_requests`` requests) rolls back at once. At the window's end
    the step passes only with a real error rate from at least ``min_requests``
    requests; otherwise the rollout aborts (weights back to the baseline) with the
    reason, e.g. "only 3 requests, need 20".

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

    def roll_back(to_state: CanaryState, reason: str, reading: ErrorRate | None, step: int) -> None:
        decided = clock()
        target.set_weights(environment, baseline_weights)
        result.rollback_seconds = clock() - decided
        rec.weights = dict(baseline_weights)
        rec.move(to_state, reason, reading=reading, step=step)

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
            f"analysing {candidate} for {config.analysis_window_seconds:g}s "
            f"every {config.interval_seconds:g}s",
            step=step,
        )

        start = clock()
        unreachable = 0
        while True:
            reading = _read(metrics, candidate, config.analysis_window_seconds)
            if (
                reading.error_rate is not None
                and reading.error_rate > config.max_error_rate
                and reading.request_count >= config.breach_min_requests
            ):
                roll_back(
                    CanaryState.ROLLED_BACK,
                    f"breach at step {step}%: {_describe(reading)} > max "
                    f"{config.max_error_rate:.2%}; traffic back on {baseline}",
                    reading,
                    step,
                )
                return result
            unreachable = unreachable + 1 if reading.reason.startswith(UNREACHABLE) else 0
            if (
                config.max_unreachable_readings is not None
                and unreachable >= config.max_unreachable_readings
            ):
                roll_back(
                    CanaryState.ABORTED,
                    f"not promoting: {unreachable} readings in a row failed ({reading.reason})",
                    reading,
                    step,
                )
                return result
            remaining = config.analysis_window_seconds - (clock() - start)
            if remaining <= 1e-9:
                break
            sleep(min(config.interval_seconds, remaining))

        problem = _analysis_problem(reading, config)
        if problem:
            roll_back(
                CanaryState.ABORTED, f"not promoting at step {step}%: {problem}", reading, step
            )
            return result
        passed = f"step {step}% passed: {_describe(reading)} <= {config.max_error_rate:.2%}"
        if step == 100:
            rec.move(CanaryState.PROMOTING, passed, reading=reading, step=step)
        else:
            rec.move(CanaryState.PROGRESSING, passed, reading=reading, step=step)

    rec.move(
        CanaryState.SUCCEEDED,
        f"candidate {candidate} serves 100%; baseline {baseline} kept at 0% for rollback",
        step=100,
    )
    return result


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


def steps_summary(steps: Sequence[int]) -> str:
    """'5% -> 25% -> 100%' for logs and descriptions."""
    return " -> ".join(f"{s}%" for s in steps)
