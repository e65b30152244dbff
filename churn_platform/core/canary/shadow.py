"""The shadow step: before any client request reaches the candidate, the router mirrors
``shadow_percent`` of them to it and answers every client with the baseline.

Every ``interval_seconds`` the step reads the candidate's and the baseline's error counts
since the shadow began from the metrics source (the candidate's counters hold only the
mirrored requests, at up to the full traffic rate) and feeds the candidate's to the same
sequential test as a canary step; and it compares the two versions on the same requests
from the mirror's record (``comparison``): p95 latency, score PSI, rank correlation and
top-decile agreement (a target that mirrors without seeing the answers, a Gateway's
``RequestMirror``, gives no pairs: the counters and their p95 judge alone). The shadow fails (``rolled_back``: the candidate is shown bad, no
client saw it) when the test shows the rate above the bound and the baseline does not
fail as much (both see the same requests: while the two rates cannot be told apart the step
reads on, and it aborts only when the test shows the baseline's rate above the bound too),
or a score or latency threshold is broken; it aborts when the candidate's 4xx share on the
same requests is worse than the baseline's (``client_error_problem``); it passes once the
test shows the rate below the bound with ``shadow_min_pairs`` paired scores and nothing
broken; it aborts when undecided after ``analysis_window_seconds``. Every reading is a transition.
"""

from __future__ import annotations

from churn_platform.core.canary.comparison import (
    ShadowReading,
    compare,
    latency_problem,
    score_problem,
)
from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.canary.report import Recorder
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.canary.statistics import (
    Sprt,
    Verdict,
    blames_candidate,
    client_error_problem,
)
from churn_platform.core.canary.statistics import latency_problem as metrics_latency_problem
from churn_platform.core.canary.step import (
    StepContext,
    StepOutcome,
    count_unreachable,
    describe,
    process_problem,
    read_rate,
    wait_for_next_reading,
)
from churn_platform.core.rollout import ErrorRate, ShadowObservations, ShadowTarget

SHADOW_STEP = 0  # the candidate's share of client traffic during the shadow


def _observe(target: ShadowTarget, environment: str, version: str) -> ShadowObservations:
    """The mirror's record so far (an empty one when the target cannot give it)."""
    try:
        observed = target.shadow_observations(environment)
    except Exception:  # the reading goes without the comparison; the next one retries
        observed = None
    return observed if observed is not None else ShadowObservations(version, 0, 0)


def _judge(
    config: CanaryConfig,
    test: Sprt,
    reading: ErrorRate,
    base: ErrorRate,
    verdict: Verdict,
    shadow: ShadowReading,
) -> tuple[CanaryState | None, str] | None:
    """How the shadow ends after this reading (state None: passed), or None to go on."""
    if verdict is Verdict.BAD:
        if blames_candidate(reading, base, config.baseline_z):
            return CanaryState.ROLLED_BACK, (
                f"shadow failed: {describe(reading)} on mirrored requests shows a rate above "
                f"the bound {config.max_error_rate:.2%} (rate {test.p0:.2%} vs {test.p1:.2%}); "
                f"baseline {describe(base)}"
            )
        # both versions see the same requests, so the two rates are equally uncertain: only
        # a baseline shown bad by the same test is a shared dependency; else read on
        if base.error_rate is not None and (
            test.verdict(base.request_count, base.error_count) is Verdict.BAD
        ):
            return CanaryState.ABORTED, (
                f"not blaming the candidate in shadow: the baseline fails as much "
                f"({describe(base)} vs candidate {describe(reading)}); a shared dependency "
                "may be down"
            )
    problem = score_problem(shadow, config) or latency_problem(shadow, config)
    if problem:
        return CanaryState.ROLLED_BACK, f"shadow failed: {problem}"
    # a candidate refusing the copies pairs no scores: judged once the error test is decided
    refused = client_error_problem(reading, base, config) if verdict is Verdict.HEALTHY else ""
    if refused:
        return CanaryState.ABORTED, f"not promoting after the shadow: {refused}"
    enough = shadow.pairs >= config.shadow_min_pairs or not shadow.scores_paired
    if verdict is Verdict.HEALTHY and enough:
        slow = metrics_latency_problem(reading, base, config)
        if slow:
            return CanaryState.ROLLED_BACK, f"shadow failed: {slow}"
        return None, (
            f"shadow passed: {describe(reading)} on mirrored requests shows a rate below the "
            f"bound {config.max_error_rate:.2%}; {shadow.cell()}"
        )
    return None


def shadow_step(
    ctx: StepContext, target: ShadowTarget, config: CanaryConfig, rec: Recorder
) -> StepOutcome:
    """Read and compare every interval while the router mirrors; the mirror is on already
    (the caller turns it off whatever happens)."""
    test = Sprt.from_config(config)
    start = ctx.tools.clock()
    unreachable = 0
    reading: ErrorRate | None = None
    ctx.tools.sleep(config.interval_seconds)  # the first reading has copies to read
    while True:
        dead = process_problem(ctx)
        if dead:
            return StepOutcome(CanaryState.ROLLED_BACK, f"shadow failed: {dead}", reading)
        window = max(ctx.tools.clock() - start, config.interval_seconds)
        reading = read_rate(ctx.tools.metrics, ctx.candidate, window)
        base = read_rate(ctx.tools.metrics, ctx.baseline, window)
        shadow = compare(_observe(target, ctx.environment, ctx.candidate), config.shadow_min_pairs)
        llr, verdict = None, Verdict.UNDECIDED
        if reading.error_rate is not None:
            llr = test.llr(reading.request_count, reading.error_count)
            verdict = test.verdict(reading.request_count, reading.error_count)
        rec.move(
            CanaryState.SHADOWING,
            f"shadow reading: {describe(reading)}; baseline {describe(base)}; test {verdict.value}",
            reading=reading,
            step=SHADOW_STEP,
            baseline_reading=base,
            llr=llr,
            shadow=shadow,
        )
        decided = _judge(config, test, reading, base, verdict, shadow)
        if decided is not None:
            return StepOutcome(decided[0], decided[1], reading, base, llr)
        unreachable, gone = count_unreachable(unreachable, reading, config)
        if gone:
            return StepOutcome(CanaryState.ABORTED, gone, reading, base, llr)
        if not wait_for_next_reading(ctx, config, start):
            why = reading.reason if reading.error_rate is None else describe(reading)
            return StepOutcome(
                CanaryState.ABORTED,
                f"shadow undecided after {config.analysis_window_seconds:g}s: {why}; "
                f"{shadow.cell()} (need {config.shadow_min_pairs} paired scores and the test "
                "to show the rate below the bound)",
                reading,
                base,
                llr,
            )
