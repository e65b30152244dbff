"""The release policy: staging beside the champion, then production through a canary.

Written against three small protocols, so the same policy drives the local processes
and Kubernetes and is unit-tested with in-memory fakes: ``DeploymentTarget`` and
``MetricsSource`` (``core.rollout``) and ``ModelRegistry`` (below: aliases and version
tags). The canary itself is ``core.canary.run_canary``; this module decides what runs
before it and what moves after it:

* staging: the champion serves staging (started if it is not running), the candidate
  runs beside it at 0%, only champion + newest candidate are kept; a failed integration
  check puts all traffic back on the champion and retires the candidate.
* production: nothing to release (gate kept the champion, or the candidate already is
  the champion), else the champion is started if it is not running, the candidate is
  deployed at 0% and the canary runs. Success moves ``previous`` to the old champion and
  ``champion`` to the candidate, then retires every other version; a rollback retires
  the candidate, tags it with the reason and leaves every alias where it was.

Nothing here imports Dagster, MLflow or Kubernetes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from churn_platform.core.canary import CanaryConfig, CanaryResult, Transition, run_canary
from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.records import (
    CHAMPION,
    DEPLOY,
    NO_ACTION,
    PREVIOUS,
    PRODUCTION,
    PROMOTED,
    STAGING,
    TAG_DEPLOYMENT,
    EvaluationDecision,
    ProductionResult,
    StagingResult,
)
from churn_platform.core.rollout import (
    DeploymentTarget,
    EnvironmentState,
    MetricsSource,
    ServedVersion,
)

# MLflow limits a tag value to 250 characters (the reason is cut, never the run).
_TAG_LIMIT = 250


@runtime_checkable
class ModelRegistry(Protocol):
    """Where versions are registered: aliases that name roles, tags that record history."""

    def alias_version(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None when it points nowhere."""
        ...

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``."""
        ...

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        """Tag a registered version."""
        ...

    def model_uri(self, version: str) -> str:
        """The URI a deployment target loads ``version`` from."""
        ...


@dataclass(frozen=True)
class StagingChecks:
    """Bounds of the staging integration checks.

    latency_p95_ms: the p95 latency bound of single-row predictions, in milliseconds.
    latency_requests: how many single-row requests the latency check sends.
    parity_rows: holdout rows scored online and offline for the parity check.
    """

    latency_p95_ms: float = 250.0
    latency_requests: int = 50
    parity_rows: int = 200

    def __post_init__(self) -> None:
        if not self.latency_p95_ms > 0:
            raise ValueError(f"latency_p95_ms must be > 0 ms, got {self.latency_p95_ms!r}")
        for name in ("latency_requests", "parity_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Staging:
    """What ``stage`` did: the candidate's server, its check outcomes, staging afterwards."""

    served: ServedVersion
    champion: str | None
    outcomes: tuple[CheckOutcome, ...]
    state: EnvironmentState

    @property
    def failed(self) -> list[str]:
        """Names of the integration checks that did not pass."""
        return [o.name for o in self.outcomes if not o.passed]

    @property
    def record(self) -> StagingResult:
        """The hand-off to production."""
        return StagingResult(
            action=DEPLOY,
            candidate=self.served.version,
            model_uri=self.served.model_uri,
            baseline=self.champion,
        )


def nothing_staged(decision: EvaluationDecision) -> StagingResult:
    """The hand-off when the gate kept the champion."""
    return StagingResult(action=NO_ACTION, reason=decision.reason)


def _ensure_running(
    target: DeploymentTarget, registry: ModelRegistry, environment: str, version: str
) -> bool:
    """Start ``version`` in ``environment`` when it is not running; True when it was started."""
    if version in target.state(environment).weights():
        return False
    target.deploy(environment, version, registry.model_uri(version))
    return True


def stage(
    target: DeploymentTarget,
    registry: ModelRegistry,
    decision: EvaluationDecision,
    verify: Callable[[ServedVersion], Sequence[CheckOutcome]],
    environment: str = STAGING,
) -> Staging:
    """Serve the promoted challenger in staging beside the champion and run ``verify`` on it.

    The champion keeps 100% of staging (started first if it is not running), the
    candidate gets 0%, and earlier candidates are retired. ``verify`` runs the
    integration checks against the candidate's own server. When any fails, the
    champion gets all traffic back and the candidate is retired; the returned
    ``Staging.failed`` names the checks.
    """
    candidate = decision.challenger_version
    champion = registry.alias_version(CHAMPION)
    if champion == candidate:  # re-staging the champion: nothing to stand beside it
        champion = None
    if champion:
        _ensure_running(target, registry, environment, champion)
    served = target.deploy(environment, candidate, decision.challenger_model_uri)
    target.set_weights(environment, {champion: 100, candidate: 0} if champion else {candidate: 100})
    for version in target.state(environment).weights():
        if version not in (champion, candidate):
            target.retire(environment, version)
    outcomes = tuple(verify(served))
    if any(not o.passed for o in outcomes):
        if champion:
            target.set_weights(environment, {champion: 100})
        target.retire(environment, candidate)
    return Staging(served, champion, outcomes, target.state(environment))


def nothing_to_release(staged: StagingResult, champion: str | None) -> str | None:
    """Why production has nothing to do, or None when the candidate goes through a canary."""
    if staged.candidate and staged.candidate == champion:
        return f"version {staged.candidate} is already the champion"
    if staged.action != DEPLOY or not staged.candidate:
        return staged.reason or "nothing staged"
    return None


@dataclass(frozen=True)
class Release:
    """What ``release`` did: the hand-off record, the canary (None when skipped), production now."""

    record: ProductionResult
    canary: CanaryResult | None
    state: EnvironmentState


def release(
    target: DeploymentTarget,
    registry: ModelRegistry,
    metrics: MetricsSource,
    staged: StagingResult,
    config: CanaryConfig,
    *,
    environment: str = PRODUCTION,
    during_canary: Callable[[EnvironmentState], AbstractContextManager[object]] | None = None,
    on_transition: Callable[[Transition], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Release:
    """Take the staged candidate to production through a canary, or say why not.

    ``during_canary`` wraps the canary (e.g. synthetic load through the endpoint); it
    gets production's state once both versions run. ``log`` hears what the policy did
    beyond the canary's own transitions (e.g. a champion that had to be started).
    """
    champion = registry.alias_version(CHAMPION)
    reason = nothing_to_release(staged, champion)
    if reason is not None:
        result = ProductionResult(
            NO_ACTION, None, champion, registry.alias_version(PREVIOUS), reason
        )
        return Release(result, None, target.state(environment))
    candidate, model_uri = staged.candidate or "", staged.model_uri or ""
    if champion and _ensure_running(target, registry, environment, champion):
        log(f"champion v{champion} was not running in {environment}; started it first")
        target.set_weights(environment, {champion: 100})
    target.deploy(environment, candidate, model_uri)
    with (during_canary or (lambda state: nullcontext()))(target.state(environment)):
        outcome = run_canary(
            target,
            metrics,
            environment,
            candidate,
            champion,
            config,
            sleep=sleep,
            clock=clock,
            on_transition=on_transition,
        )
    return Release(
        _conclude(target, registry, environment, outcome), outcome, target.state(environment)
    )


def _conclude(
    target: DeploymentTarget, registry: ModelRegistry, environment: str, outcome: CanaryResult
) -> ProductionResult:
    """After the canary: move the aliases and retire the rest, or retire the candidate."""
    candidate, baseline = outcome.candidate, outcome.baseline
    if outcome.promoted:
        if baseline:
            registry.set_alias(PREVIOUS, baseline)
        registry.set_alias(CHAMPION, candidate)
        registry.set_version_tags(candidate, {TAG_DEPLOYMENT: PRODUCTION})
        for version in target.state(environment).weights():
            if version not in (candidate, baseline):
                target.retire(environment, version)
    else:
        target.retire(environment, candidate)
        registry.set_version_tags(
            candidate, {TAG_DEPLOYMENT: f"rolled_back: {outcome.reason}"[:_TAG_LIMIT]}
        )
    return ProductionResult(
        action=PROMOTED if outcome.promoted else str(outcome.status),
        candidate=candidate,
        champion=registry.alias_version(CHAMPION),
        previous=registry.alias_version(PREVIOUS),
        reason=outcome.reason,
    )
