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
* schema changes: a candidate requiring request fields the champion's clients do not send
  (``core.schema_change``, from the two versions' logged specs) is refused before anything
  moves (``CanaryConfig.schema_change="refuse"``: nothing deployed, aliases untouched, the
  candidate stays in staging and is tagged ``refused: ...``), or cut over
  (``"cutover"``): the shadow step, then 100% at once, never a partial step.

Nothing here imports Dagster, MLflow or Kubernetes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from churn_platform.core.canary import (
    CanaryConfig,
    CanaryResult,
    Collaborators,
    Rollout,
    Transition,
    run_canary,
)
from churn_platform.core.canary.comparison import offline_thresholds
from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.records import (
    CHALLENGER,
    CHAMPION,
    DEPLOY,
    NO_ACTION,
    PREVIOUS,
    PRODUCTION,
    PROMOTED,
    REFUSED,
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
    ShadowTarget,
)
from churn_platform.core.schema_change import SchemaChange, schema_change
from churn_platform.core.spec import Spec

# MLflow limits a tag value to 250 characters (the reason is cut, never the run).
_TAG_LIMIT = 250
# A registry write that fails after traffic moved is retried this often before it is
# reported (a locked SQLite store clears within seconds; a dead server does not).
ALIAS_ATTEMPTS = 3
ALIAS_RETRY_SECONDS = 2.0
ROLLBACK = "rollback"  # the action of a rollback on demand
#: (champion, candidate) -> both versions' scores on the same rows (the holdout)
OfflineScores = Callable[[str, str], tuple[np.ndarray, np.ndarray]]


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


@runtime_checkable
class VersionSpecs(Protocol):
    """A registry that gives the spec each version was logged with (the MLflow registry
    does); the release compares the candidate's request schema with the champion's only
    through it."""

    def spec_of_version(self, version: str) -> Spec:
        """The spec ``version`` was trained and logged with."""
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
    repairs: tuple[str, ...] = ()  # what ``reconcile`` fixed before staging
    notes: tuple[str, ...] = ()  # a newer candidate (another run's) replaced or waiting

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


@runtime_checkable
class Restorable(Protocol):
    """A target that can bring an environment back as its own records describe it
    (dead processes restarted at their recorded weights, the router at its URL)."""

    def restore(self, environment: str) -> list[str]:
        """Restart what is recorded but dead; return what was repaired, one line each."""
        ...


def reconcile(target: DeploymentTarget, registry: ModelRegistry, environment: str) -> list[str]:
    """Bring ``environment`` back to what the registry says before anything else moves.

    The target restores what its records describe (when it can), then the champion runs
    and carries 100% of the traffic: leftover canary weights of an interrupted release
    go back to the champion. Returns what was repaired (empty when nothing was wrong).
    """
    repairs = list(target.restore(environment)) if isinstance(target, Restorable) else []
    champion = registry.alias_version(CHAMPION)
    if not champion:
        return repairs
    if _ensure_running(target, registry, environment, champion):
        repairs.append(f"champion v{champion} was not running in {environment}; started it")
    state = target.state(environment)
    weights = state.weights()
    if weights.get(champion) != 100 or state.endpoint is None:
        target.set_weights(environment, {champion: 100})
        repairs.append(
            f"{environment} traffic was {weights or 'nowhere'}"
            f"{'' if state.endpoint else ' (router down)'}; now 100% on champion v{champion}"
        )
    return repairs


def _restore_champion(
    target: DeploymentTarget, environment: str, champion: str | None, candidate: str
) -> None:
    """After an interruption (exception, Ctrl-C) mid-release: all traffic back on the
    champion and the candidate retired, as far as the target still answers."""
    if not champion:
        return
    try:
        target.set_weights(environment, {champion: 100})
        target.retire(environment, candidate)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def set_aliases(
    registry: ModelRegistry,
    moves: Sequence[tuple[str, str]],
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = ALIAS_ATTEMPTS,
) -> str | None:
    """Point each alias at its version, retrying a failing registry; None when every move
    landed, else what failed (the caller reports it with the repair command)."""
    for alias, version in moves:
        for attempt in range(1, attempts + 1):
            try:
                registry.set_alias(alias, version)
                break
            except Exception as exc:  # noqa: BLE001 - any registry fault is retried, then reported
                if attempt == attempts:
                    return f"setting alias {alias!r} -> v{version} failed {attempts} times: {exc}"
                sleep(ALIAS_RETRY_SECONDS)
    return None


def repair_command(version: str) -> str:
    """The command that puts production and the aliases on ``version``."""
    return f"python -m churn_platform rollback --to {version}"


def traffic_disagreement(champion: str, live: dict[str, int] | None) -> str | None:
    """Why production's traffic does not match the champion alias, or None when it does."""
    if live is None:
        return (
            f"champion alias names v{champion} but no production router answers; "
            "run: python -m churn_platform.serving restore"
        )
    if live.get(champion) != 100:
        serving = ", ".join(f"v{v} {w}%" for v, w in live.items() if w) or "nothing"
        back = f"to put all traffic back on v{champion}: python -m churn_platform rollback --to {champion}"
        others = {v: w for v, w in live.items() if v != champion and w}
        if not others:
            return f"champion alias names v{champion} but the router sends {serving}; {back}"
        # one command per intent: the other version is never the champion itself
        leader = max(others, key=lambda v: others[v])
        return (
            f"champion alias names v{champion} but the router sends {serving}; "
            f"to make v{leader} the champion: python -m churn_platform rollback --to {leader}; "
            f"{back}"
        )
    return None


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
    repairs = tuple(reconcile(target, registry, environment))
    candidate = decision.challenger_version
    champion = registry.alias_version(CHAMPION)
    if champion == candidate:  # re-staging the champion: nothing to stand beside it
        champion = None
    if champion:
        _ensure_running(target, registry, environment, champion)
    served = target.deploy(environment, candidate, decision.challenger_model_uri)
    target.set_weights(environment, {champion: 100, candidate: 0} if champion else {candidate: 100})
    replaced = [v for v in target.state(environment).weights() if v not in (champion, candidate)]
    for version in replaced:
        target.retire(environment, version)
    notes = staging_notes(candidate, replaced, registry.alias_version(CHALLENGER))
    try:
        outcomes = tuple(verify(served))
    except BaseException:
        _restore_champion(target, environment, champion, candidate)
        raise
    if any(not o.passed for o in outcomes):
        if champion:
            target.set_weights(environment, {champion: 100})
        target.retire(environment, candidate)
    return Staging(served, champion, outcomes, target.state(environment), repairs, notes)


def staging_notes(
    candidate: str, replaced: Sequence[str], challenger: str | None
) -> tuple[str, ...]:
    """Notes for a staging that is not about the newest candidate: ``replaced`` are the
    versions this staging retired (an older candidate, or another run's newer one), and
    ``challenger`` is the registry's challenger alias now."""
    notes = [
        f"replaced v{v} in staging, newer than this run's v{candidate} (another run staged it); "
        f"run churn_retraining/churn_release for v{v}"
        for v in replaced
        if _newer(v, candidate)
    ]
    if challenger and challenger != candidate and _newer(challenger, candidate):
        notes.append(
            f"the challenger alias names v{challenger}, newer than the v{candidate} staged here; "
            "this run does not ship it"
        )
    return tuple(notes)


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
    repairs: tuple[str, ...] = ()  # what ``reconcile`` fixed before the release
    alias_error: str | None = None  # traffic moved but the registry did not follow
    notes: tuple[str, ...] = ()  # e.g. a newer candidate than the run's own, not shipped
    schema_change: SchemaChange | None = None  # refused or cut over because of it

    @property
    def repair(self) -> str | None:
        """The command that makes the aliases match the traffic, when they do not."""
        return repair_command(self.record.candidate or "") if self.alias_error else None


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
    offline_scores: OfflineScores | None = None,
) -> Release:
    """Take the staged candidate to production through a canary, or say why not.

    ``offline_scores(champion, candidate)`` gives both versions' scores on the same rows
    (the holdout): the shadow step's score thresholds then follow what the pair already
    shows there (``comparison.offline_thresholds``), so a candidate meant to differ is not
    stopped for differing.

    ``during_canary`` wraps the canary (e.g. synthetic load through the endpoint); it
    gets production's state once both versions run. ``log`` hears what the policy did
    beyond the canary's own transitions (e.g. a champion that had to be started).
    """
    repairs = tuple(reconcile(target, registry, environment))
    for line in repairs:
        log(f"repaired before the release: {line}")
    champion = registry.alias_version(CHAMPION)
    reason = nothing_to_release(staged, champion)
    if reason is not None:
        result = ProductionResult(
            NO_ACTION, None, champion, registry.alias_version(PREVIOUS), reason
        )
        return Release(result, None, target.state(environment), repairs)
    candidate, model_uri = staged.candidate or "", staged.model_uri or ""
    change = breaking_change(registry, champion, candidate)
    if change is not None:
        refusal = schema_refusal(change, config, target, environment)
        if refusal is not None:
            return _refuse(target, registry, environment, change, refusal, repairs)
        config = replace(config, steps=(100,))
        log(f"{change.describe()}; cut-over: the shadow step, then 100% at once")
    if offline_scores is not None and champion is not None and config.shadow:
        config, note = offline_thresholds(config, *offline_scores(champion, candidate))
        log(note)
    target.deploy(environment, candidate, model_uri)
    finished = False
    try:
        with (during_canary or (lambda state: nullcontext()))(target.state(environment)):
            outcome = run_canary(
                Collaborators(target, metrics, sleep=sleep, clock=clock),
                Rollout(environment, candidate, champion),
                config,
                on_transition=on_transition,
            )
        finished = True
    finally:
        if not finished:  # interrupted mid-canary: production ends on the champion
            _restore_champion(target, environment, champion, candidate)
    record, alias_error = _conclude(target, registry, environment, outcome, sleep)
    if change is not None:
        cut = f"schema change cut-over ({', '.join(change.fields)}): "
        record = replace(record, reason=cut + record.reason)
    return Release(
        record, outcome, target.state(environment), repairs, alias_error, schema_change=change
    )


def breaking_change(
    registry: ModelRegistry, champion: str | None, candidate: str
) -> SchemaChange | None:
    """The request fields ``candidate`` requires that the clients of ``champion`` do not
    send (their logged specs compared), or None: no champion, no break, or a registry that
    cannot give specs (``VersionSpecs``)."""
    if not champion or not isinstance(registry, VersionSpecs):
        return None
    return schema_change(
        champion, registry.spec_of_version(champion), candidate, registry.spec_of_version(candidate)
    )


def schema_refusal(
    change: SchemaChange, config: CanaryConfig, target: DeploymentTarget, environment: str
) -> str | None:
    """Why a schema-breaking candidate is not released (None: it is cut over)."""
    if config.schema_change == "refuse":
        return (
            f"{change.describe()}. Not released: a canary would send those clients to a "
            f"version that answers them 422. Champion v{change.champion} keeps 100%, "
            f"v{change.candidate} stays in staging. To release it once the clients send "
            "these fields: run the release with schema_change: cutover (production_deployment "
            "config, or CHURN_SCHEMA_CHANGE=cutover): a shadow step on mirrored requests, "
            "then 100% at once; or retrain on a spec the clients already satisfy"
        )
    if not config.shadow:
        return (
            f"{change.describe()}. Not released: a cut-over needs the shadow step and the "
            "config turns it off; set shadow: true"
        )
    if not isinstance(target, ShadowTarget):
        return (
            f"{change.describe()}. Not released: a cut-over needs the shadow step and the "
            f"{environment} target cannot mirror requests; change the clients and the "
            "model together by hand (python -m churn_platform rollback --to "
            f"{change.candidate} switches at once)"
        )
    return None


def _refuse(
    target: DeploymentTarget,
    registry: ModelRegistry,
    environment: str,
    change: SchemaChange,
    reason: str,
    repairs: tuple[str, ...],
) -> Release:
    """Release nothing: production and the aliases stay as they are; the candidate (still
    in staging) is tagged with the reason."""
    registry.set_version_tags(change.candidate, {TAG_DEPLOYMENT: f"refused: {reason}"[:_TAG_LIMIT]})
    record = ProductionResult(
        REFUSED,
        change.candidate,
        registry.alias_version(CHAMPION),
        registry.alias_version(PREVIOUS),
        reason,
    )
    return Release(record, None, target.state(environment), repairs, schema_change=change)


def _conclude(
    target: DeploymentTarget,
    registry: ModelRegistry,
    environment: str,
    outcome: CanaryResult,
    sleep: Callable[[float], None],
) -> tuple[ProductionResult, str | None]:
    """After the canary: move the aliases and retire the rest, or retire the candidate.
    The second value says which alias move failed (traffic already moved)."""
    candidate, baseline = outcome.candidate, outcome.baseline
    alias_error = None
    if outcome.promoted:
        moves = [(PREVIOUS, baseline)] if baseline else []
        alias_error = set_aliases(registry, [*moves, (CHAMPION, candidate)], sleep=sleep)
        if alias_error is None:
            registry.set_version_tags(candidate, {TAG_DEPLOYMENT: PRODUCTION})
        for version in target.state(environment).weights():
            if version not in (candidate, baseline):
                target.retire(environment, version)
    else:
        target.retire(environment, candidate)
        registry.set_version_tags(
            candidate, {TAG_DEPLOYMENT: f"rolled_back: {outcome.reason}"[:_TAG_LIMIT]}
        )
    record = ProductionResult(
        action=PROMOTED if outcome.promoted else str(outcome.status),
        candidate=candidate,
        champion=_alias_or_none(registry, CHAMPION),
        previous=_alias_or_none(registry, PREVIOUS),
        reason=outcome.reason if alias_error is None else f"{outcome.reason}; {alias_error}",
    )
    return record, alias_error


def _alias_or_none(registry: ModelRegistry, alias: str) -> str | None:
    """An alias read that survives the registry fault being reported."""
    try:
        return registry.alias_version(alias)
    except Exception:  # noqa: BLE001 - the fault is already in the record
        return None


def rollback(
    target: DeploymentTarget,
    registry: ModelRegistry,
    to_version: str | None = None,
    *,
    reason: str = "",
    environment: str = PRODUCTION,
    sleep: Callable[[float], None] = time.sleep,
) -> Release:
    """Move all of ``environment``'s traffic to ``previous`` (or ``to_version``) and swap
    the aliases: ``champion`` <- that version, ``previous`` <- the old champion.

    A version no longer running is started from the registry first. Also the repair for
    traffic and aliases that disagree: ``to_version`` = the version the router serves.
    """
    champion = registry.alias_version(CHAMPION)
    version = str(to_version) if to_version else registry.alias_version(PREVIOUS)
    why = reason or "rollback on demand"
    if not version:
        raise ValueError(
            "nothing to roll back to: the registry has no 'previous' alias; name a version "
            "with --to VERSION (to_version in the job's config)"
        )
    repairs = []
    if isinstance(target, Restorable):
        repairs = list(target.restore(environment))
    if _ensure_running(target, registry, environment, version):
        repairs.append(f"v{version} was not running in {environment}; started it from the registry")
    before = target.state(environment).weights()
    target.set_weights(environment, {version: 100})
    moves = [(CHAMPION, version)]
    if champion and champion != version:
        moves.append((PREVIOUS, champion))
    alias_error = set_aliases(registry, moves, sleep=sleep)
    if alias_error is None:
        registry.set_version_tags(version, {TAG_DEPLOYMENT: PRODUCTION})
        if champion and champion != version:
            registry.set_version_tags(
                champion, {TAG_DEPLOYMENT: f"rolled_back: {why}"[:_TAG_LIMIT]}
            )
    text = f"traffic {before or 'nowhere'} -> 100% on v{version} (champion was v{champion}): {why}"
    record = ProductionResult(
        action=ROLLBACK,
        candidate=version,
        champion=_alias_or_none(registry, CHAMPION),
        previous=_alias_or_none(registry, PREVIOUS),
        reason=text if alias_error is None else f"{text}; {alias_error}",
    )
    return Release(record, None, target.state(environment), tuple(repairs), alias_error)


def select_candidate(
    own: StagingResult | None, stored: StagingResult, challenger: str | None
) -> tuple[StagingResult, tuple[str, ...]]:
    """Which staged candidate this release ships, and notes about the others.

    ``own`` is what this run's staging step staged (None when the run did not stage,
    e.g. the approval job); ``stored`` is the latest staged value (possibly another
    run's); ``challenger`` is the registry's challenger alias now. A run ships what it
    staged; a newer candidate elsewhere is named in the notes, never shipped silently.
    """
    chosen = own if own is not None else stored
    notes = []
    if own is not None and stored.candidate and stored.candidate != own.candidate:
        notes.append(
            f"another run staged v{stored.candidate} meanwhile; this run releases its own "
            f"{'v' + own.candidate if own.candidate else 'nothing'}"
        )
    if challenger and challenger != chosen.candidate and _newer(challenger, chosen.candidate):
        notes.append(
            f"the challenger alias names v{challenger}, newer than the v{chosen.candidate or '-'} "
            "released here; it is not shipped by this run (run churn_retraining/churn_release "
            "for it)"
        )
    return chosen, tuple(notes)


def _newer(a: str, b: str | None) -> bool:
    if not b:
        return True
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b
