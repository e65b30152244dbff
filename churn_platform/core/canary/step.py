"""What every step's analysis shares: the collaborators a rollout drives, the step being
analysed, how a step ends, and the readings (with the outages a reading can meet)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.rollout import DeploymentTarget, ErrorRate, MetricsSource

# Metrics sources start ``ErrorRate.reason`` with this when they could not be reached.
UNREACHABLE = "metrics source unreachable"


@dataclass(frozen=True)
class Collaborators:
    """What a rollout drives and reads: the deployment target, the metrics source and the
    clocks. Time is injected (``sleep``, ``clock``, ``wall_clock``) so tests run instantly."""

    target: DeploymentTarget
    metrics: MetricsSource
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class StepContext:
    """One step of a rollout with a baseline: who is analysed where, at what percent.

    router_expected: the environment had an endpoint when the rollout began, so a router
    that vanishes is a breach (a target without one, e.g. Kubernetes without a configured
    endpoint, is not judged on it).
    """

    tools: Collaborators
    environment: str
    candidate: str
    baseline: str
    step: int
    router_expected: bool


@dataclass(frozen=True)
class StepOutcome:
    """How one step's analysis ended: passed (``to_state`` None) or not, and why."""

    to_state: CanaryState | None
    reason: str
    reading: ErrorRate | None
    baseline_reading: ErrorRate | None = None
    llr: float | None = None


def process_problem(ctx: StepContext) -> str:
    """'' while the candidate and the router run; else what died (a breach: its traffic
    fails until the weights move)."""
    try:
        state = ctx.tools.target.state(ctx.environment)
    except Exception as exc:  # the target's own store failing is not the canary's fault
        return f"could not read the {ctx.environment} state: {type(exc).__name__}: {exc}"
    if ctx.candidate not in {v.version for v in state.versions}:
        return f"candidate {ctx.candidate}'s server is not running (process died or not ready)"
    if ctx.router_expected and state.endpoint is None:
        return f"the {ctx.environment} router is not running"
    return ""


def wait_for_next_reading(ctx: StepContext, config: CanaryConfig, start: float) -> bool:
    """Sleep until the next reading of a step that began at ``start``; False (no sleep)
    once the step's analysis window is used up."""
    remaining = config.analysis_window_seconds - (ctx.tools.clock() - start)
    if remaining <= 1e-9:
        return False
    ctx.tools.sleep(min(config.interval_seconds, remaining))
    return True


def count_unreachable(count: int, reading: ErrorRate, config: CanaryConfig) -> tuple[int, str]:
    """The run of unreachable readings so far, and why to abort once it is too long ('' if not)."""
    count = count + 1 if reading.reason.startswith(UNREACHABLE) else 0
    limit = config.max_unreachable_readings
    if limit is not None and count >= limit:
        return count, f"not promoting: {count} readings in a row failed ({reading.reason})"
    return count, ""


def describe(reading: ErrorRate) -> str:
    """'error rate 1.00% over 100 requests', or why there is no rate."""
    if reading.error_rate is None:
        return f"no error rate ({reading.reason or 'no data'})"
    return f"error rate {reading.error_rate:.2%} over {reading.request_count:.0f} requests"


def read_rate(metrics: MetricsSource, version: str, window: float) -> ErrorRate:
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
