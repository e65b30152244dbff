"""The earlier count rule (``analysis="count"``), kept for comparison with the sequential test.

A fixed window per step: a reading above ``max_error_rate`` resting on at least
``breach_min_requests`` requests rolls back; the window's last reading needs ``min_requests``.
"""

from __future__ import annotations

from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.canary.statistics import client_error_problem
from churn_platform.core.canary.step import (
    StepContext,
    StepOutcome,
    count_unreachable,
    describe,
    process_problem,
    read_rate,
    wait_for_next_reading,
)
from churn_platform.core.rollout import ErrorRate


def count_step(ctx: StepContext, config: CanaryConfig) -> StepOutcome:
    """The earlier rule: fixed window; a reading above the bound (with at least
    ``breach_min_requests``) rolls back; the last reading needs ``min_requests``."""
    step = ctx.step
    start = ctx.tools.clock()
    unreachable = 0
    while True:
        dead = process_problem(ctx)
        if dead:
            return StepOutcome(CanaryState.ROLLED_BACK, f"breach at step {step}%: {dead}", None)
        reading = read_rate(ctx.tools.metrics, ctx.candidate, config.analysis_window_seconds)
        if (
            reading.error_rate is not None
            and reading.error_rate > config.max_error_rate
            and reading.request_count >= config.breach_min_requests
        ):
            return StepOutcome(
                CanaryState.ROLLED_BACK,
                f"breach at step {step}%: {describe(reading)} > max {config.max_error_rate:.2%}",
                reading,
            )
        unreachable, gone = count_unreachable(unreachable, reading, config)
        if gone:
            return StepOutcome(CanaryState.ABORTED, gone, reading)
        if not wait_for_next_reading(ctx, config, start):
            break
    problem = _analysis_problem(reading, config)
    if not problem and reading.client_error_rate is not None:
        base = read_rate(ctx.tools.metrics, ctx.baseline, config.analysis_window_seconds)
        problem = client_error_problem(reading, base, config)
    if problem:
        return StepOutcome(
            CanaryState.ABORTED, f"not promoting at step {step}%: {problem}", reading
        )
    return StepOutcome(
        None, f"step {step}% passed: {describe(reading)} <= {config.max_error_rate:.2%}", reading
    )


def _analysis_problem(reading: ErrorRate, config: CanaryConfig) -> str:
    """Why the final reading of a window cannot justify promotion ('' when it can)."""
    if reading.error_rate is None:
        return reading.reason or "no data from the metrics source"
    if reading.request_count < config.min_requests:
        return f"only {reading.request_count:.0f} requests, need {config.min_requests}"
    return ""
