"""The default step analysis (``analysis="sequential"``): the candidate's and the baseline's
counts since the step began, read every interval and fed to the sequential test."""

from __future__ import annotations

from dataclasses import dataclass

from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.canary.report import Recorder
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.canary.statistics import (
    Sprt,
    Verdict,
    blames_candidate,
    client_error_problem,
    latency_problem,
)
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


@dataclass(frozen=True)
class _Look:
    """One reading of both versions over the step so far, and what the test makes of it."""

    reading: ErrorRate
    base: ErrorRate
    llr: float | None
    verdict: Verdict


def sequential_step(ctx: StepContext, config: CanaryConfig, rec: Recorder) -> StepOutcome:
    """Read the candidate and the baseline every interval since the step began; decide
    with the sequential test as soon as the counts allow; record every reading."""
    test = Sprt.from_config(config)
    start = ctx.tools.clock()
    unreachable = 0
    look: _Look | None = None
    # the first reading comes one interval in, so its look-back holds this step's requests
    # only (not the shadow's mirrored copies at the full rate, nor the previous step's)
    ctx.tools.sleep(config.interval_seconds)
    while True:
        dead = process_problem(ctx)
        if dead:
            reading = None if look is None else look.reading
            return StepOutcome(
                CanaryState.ROLLED_BACK, f"breach at step {ctx.step}%: {dead}", reading
            )
        look = _look(ctx, config, test, rec, start)
        decided = _judge(ctx, config, test, look)
        if decided is not None:
            return decided
        unreachable, gone = count_unreachable(unreachable, look.reading, config)
        if gone:
            return StepOutcome(CanaryState.ABORTED, gone, look.reading, look.base, look.llr)
        if not wait_for_next_reading(ctx, config, start):
            return _undecided(ctx, config, test, look)


def _look(ctx: StepContext, config: CanaryConfig, test: Sprt, rec: Recorder, start: float) -> _Look:
    """Read both versions since ``start``, run the test, record the reading."""
    # the look-back covers the step so far: the test sees this step's counts only
    window = max(ctx.tools.clock() - start, config.interval_seconds)
    reading = read_rate(ctx.tools.metrics, ctx.candidate, window)
    base = read_rate(ctx.tools.metrics, ctx.baseline, window)
    llr = None
    verdict = Verdict.UNDECIDED
    if reading.error_rate is not None:
        llr = test.llr(reading.request_count, reading.error_count)
        verdict = test.verdict(reading.request_count, reading.error_count)
    rec.move(
        CanaryState.ANALYSING,
        f"reading at step {ctx.step}%: {describe(reading)}; baseline {describe(base)}; "
        f"test {verdict.value}",
        reading=reading,
        step=ctx.step,
        baseline_reading=base,
        llr=llr,
    )
    return _Look(reading, base, llr, verdict)


def _bounds(test: Sprt, llr: float | None) -> str:
    """The test's statistic, its bounds and the two rates it weighs, for a reason."""
    llr_text = "n/a" if llr is None else f"{llr:+.2f}"
    return (
        f"LLR {llr_text}, bounds {test.lower:+.2f}/{test.upper:+.2f}; "
        f"rate {test.p0:.2%} vs {test.p1:.2%}"
    )


def _judge(ctx: StepContext, config: CanaryConfig, test: Sprt, look: _Look) -> StepOutcome | None:
    """How the step ends after this reading, or None while the test is undecided."""
    step, reading, base, llr = ctx.step, look.reading, look.base, look.llr
    if look.verdict is Verdict.BAD:
        if blames_candidate(reading, base, config.baseline_z):
            return StepOutcome(
                CanaryState.ROLLED_BACK,
                f"breach at step {step}%: {describe(reading)} shows a rate above the "
                f"bound {config.max_error_rate:.2%} ({_bounds(test, llr)}); "
                f"baseline {describe(base)}",
                reading,
                base,
                llr,
            )
        return StepOutcome(
            CanaryState.ABORTED,
            f"not blaming the candidate at step {step}%: the baseline fails as much "
            f"({describe(base)} vs candidate {describe(reading)}); a shared dependency "
            "may be down, so the release stops with traffic back on the baseline",
            reading,
            base,
            llr,
        )
    if look.verdict is Verdict.HEALTHY and reading.request_count >= config.min_requests:
        refused = client_error_problem(reading, base, config)
        if refused:
            return StepOutcome(
                CanaryState.ABORTED, f"not promoting at step {step}%: {refused}", reading, base, llr
            )
        slow = latency_problem(reading, base, config)
        if slow:
            return StepOutcome(
                CanaryState.ROLLED_BACK, f"breach at step {step}%: {slow}", reading, base, llr
            )
        return StepOutcome(
            None,
            f"step {step}% passed: {describe(reading)} shows a rate below the bound "
            f"{config.max_error_rate:.2%} ({_bounds(test, llr)})",
            reading,
            base,
            llr,
        )
    return None


def _undecided(ctx: StepContext, config: CanaryConfig, test: Sprt, look: _Look) -> StepOutcome:
    """The step's time ran out before the test decided: abort with the counts."""
    reading = look.reading
    if reading.error_rate is None:
        why = reading.reason or "no data from the metrics source"
    else:
        why = (
            f"undecided after {config.analysis_window_seconds:g}s: {describe(reading)} "
            f"({_bounds(test, look.llr)}); a healthy candidate needs about "
            f"{test.requests_to_pass()} error-free requests: raise analysis_window_seconds "
            "or the traffic"
        )
    return StepOutcome(
        CanaryState.ABORTED,
        f"not promoting at step {ctx.step}%: {why}",
        reading,
        look.base,
        look.llr,
    )
