"""The rollout state machine: ``run_canary`` moves a candidate through the configured steps,
analyses each one (sequential test or count rule) and rolls back or aborts when it must."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.canary.count_rule import count_step
from churn_platform.core.canary.report import CanaryResult, Recorder, Transition
from churn_platform.core.canary.sequential import sequential_step
from churn_platform.core.canary.shadow import SHADOW_STEP, shadow_step
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.canary.step import Collaborators, StepContext, StepOutcome
from churn_platform.core.rollout import (
    DeploymentTarget,
    EnvironmentState,
    ServedVersion,
    ShadowTarget,
)


@dataclass(frozen=True)
class Rollout:
    """Which version replaces which, where: ``baseline`` is the version serving traffic now,
    None for the first deployment ever."""

    environment: str
    candidate: str
    baseline: str | None


def run_canary(
    tools: Collaborators,
    rollout: Rollout,
    config: CanaryConfig,
    *,
    on_transition: Callable[[Transition], None] | None = None,
    health_check: Callable[[ServedVersion], bool] | None = None,
) -> CanaryResult:
    """Roll ``rollout.candidate`` out step by step, rolling back on a breach.

    Both versions must already be deployed (``tools.target.deploy``). With
    ``config.shadow`` and a target that can mirror (``ShadowTarget``) the rollout starts
    with the shadow step (``core.canary.shadow``): no client request reaches the
    candidate until it passes. At each step the
    weights become ``{candidate: step, baseline: 100 - step}`` and the step is analysed
    per ``config.analysis`` (package docstring): it ends in a pass, a rollback (the
    evidence shows the candidate is bad, or its server or the router died) or an abort
    with the reason (undecided in time, no data, or the baseline failing as much).

    With ``baseline=None`` (first deployment ever) the candidate gets 100% once
    ``health_check`` (default: the target lists it) passes.

    ``on_transition`` is called with each ``Transition`` as it happens (e.g. to log it
    in Dagster). Returns the ``CanaryResult``; it raises only for caller mistakes (a
    version not deployed) or when the target cannot restore the baseline's traffic.
    """
    state = _running_state(tools.target, rollout)
    environment, candidate, baseline = rollout.environment, rollout.candidate, rollout.baseline
    result = CanaryResult(
        status=CanaryState.PENDING,
        environment=environment,
        candidate=candidate,
        baseline=baseline,
    )
    rec = Recorder(result, tools.clock, tools.wall_clock, on_transition)
    rec.weights = state.weights()

    if baseline is None:
        served = {v.version: v for v in state.versions}[candidate]
        return _first_deployment(tools.target, environment, served, rec, health_check)

    has_router = state.endpoint is not None  # then a router that vanishes is a breach
    target = tools.target
    if config.shadow and isinstance(target, ShadowTarget):
        ctx = StepContext(tools, environment, candidate, baseline, SHADOW_STEP, has_router)
        if not _run_shadow(ctx, target, config, rec):
            return result
    for step in config.steps:
        ctx = StepContext(tools, environment, candidate, baseline, step, has_router)
        if not _run_step(ctx, config, rec):
            return result
    rec.move(
        CanaryState.SUCCEEDED,
        f"candidate {candidate} serves 100%; baseline {baseline} kept at 0% for rollback",
        step=100,
    )
    return result


def _running_state(target: DeploymentTarget, rollout: Rollout) -> EnvironmentState:
    """The environment's state, once the rollout is shown to make sense in it."""
    environment, candidate, baseline = rollout.environment, rollout.candidate, rollout.baseline
    if not candidate:
        raise ValueError("run_canary needs a candidate version, e.g. '4'")
    if baseline is not None and baseline == candidate:
        raise ValueError(
            f"candidate and baseline are both {candidate!r}; pass baseline=None for a first "
            "deployment or the version currently serving traffic"
        )
    state = target.state(environment)
    running = {v.version for v in state.versions}
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
    return state


def _run_step(ctx: StepContext, config: CanaryConfig, rec: Recorder) -> bool:
    """Move the traffic to this step, analyse it, record how it ended; False when the
    rollout stopped here (rolled back or aborted)."""
    step, candidate, baseline = ctx.step, ctx.candidate, ctx.baseline
    weights = {candidate: step, baseline: 100 - step}
    try:
        ctx.tools.target.set_weights(ctx.environment, weights)
    except Exception as exc:
        reason = f"could not set weights {weights}: {type(exc).__name__}: {exc}"
        _roll_back(ctx, rec, CanaryState.ABORTED, StepOutcome(CanaryState.ABORTED, reason, None))
        return False
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
        outcome = count_step(ctx, config)
    else:
        outcome = sequential_step(ctx, config, rec)
    if outcome.to_state is not None:
        _roll_back(ctx, rec, outcome.to_state, outcome)
        return False
    rec.move(
        CanaryState.PROMOTING if step == 100 else CanaryState.PROGRESSING,
        outcome.reason,
        reading=outcome.reading,
        step=step,
        baseline_reading=outcome.baseline_reading,
        llr=outcome.llr,
    )
    return True


def _run_shadow(
    ctx: StepContext, target: ShadowTarget, config: CanaryConfig, rec: Recorder
) -> bool:
    """Mirror requests to the candidate, analyse, stop the mirror whatever happened and
    record how the shadow ended; False when the release stops here."""
    environment, candidate, baseline = ctx.environment, ctx.candidate, ctx.baseline
    percent = config.shadow_percent
    try:
        target.set_mirror(environment, candidate, percent)
    except Exception as exc:
        rec.move(
            CanaryState.ABORTED,
            f"could not start the shadow (mirror {percent}% to {candidate}): "
            f"{type(exc).__name__}: {exc}; traffic stays on {baseline}",
            step=SHADOW_STEP,
        )
        return False
    rec.move(
        CanaryState.SHADOWING,
        f"shadow: {percent}% of the requests mirrored to candidate {candidate}, every "
        f"client answered by {baseline}; at most {config.analysis_window_seconds:g}s",
        step=SHADOW_STEP,
    )
    outcome: StepOutcome | None = None
    try:
        outcome = shadow_step(ctx, target, config, rec)
    finally:
        decided = ctx.tools.clock()
        stopped = _stop_mirror(target, environment, candidate)
        if outcome is not None and outcome.to_state is not None:
            rec.result.rollback_seconds = ctx.tools.clock() - decided
    failed = outcome.to_state is not None
    rec.move(
        outcome.to_state or CanaryState.PROGRESSING,
        f"{outcome.reason}; {stopped}"
        + (f", no client request reached {candidate}" if failed else ""),
        reading=outcome.reading,
        step=SHADOW_STEP,
        baseline_reading=outcome.baseline_reading,
        llr=outcome.llr,
    )
    return not failed


def _stop_mirror(target: ShadowTarget, environment: str, candidate: str) -> str:
    """Stop mirroring; what happened, for the reason (a failure leaves copies going to a
    candidate no client hears, until it is retired and leaves the router's table)."""
    try:
        target.set_mirror(environment, None)
    except Exception as exc:
        return (
            f"stopping the mirror failed ({type(exc).__name__}: {exc}); copies go to "
            f"{candidate} until it is retired"
        )
    return "mirror off"


def _roll_back(
    ctx: StepContext, rec: Recorder, to_state: CanaryState, outcome: StepOutcome
) -> None:
    """Put all the traffic back on the baseline and record why (``to_state``: rolled back
    or aborted); the time the target took is the result's rollback_seconds."""
    baseline_weights = {ctx.candidate: 0, ctx.baseline: 100}
    clock = ctx.tools.clock
    decided = clock()
    ctx.tools.target.set_weights(ctx.environment, baseline_weights)
    rec.result.rollback_seconds = clock() - decided
    rec.weights = dict(baseline_weights)
    rec.move(
        to_state,
        f"{outcome.reason}; traffic back on {ctx.baseline}",
        reading=outcome.reading,
        step=ctx.step,
        baseline_reading=outcome.baseline_reading,
    )


def _first_deployment(
    target: DeploymentTarget,
    environment: str,
    served: ServedVersion,
    rec: Recorder,
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


def _default_health(state: EnvironmentState, candidate: str) -> bool:
    return any(v.version == candidate for v in state.versions)
