"""The release policy (staging beside the champion, canary, alias moves) with in-memory fakes.

No Dagster, MLflow or servers: the target keeps weights in dicts, the registry keeps
aliases in a dict, metrics answer a fixed error rate, and time only moves when the
canary sleeps. The real run is ``test_pipeline_deploy.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from churn_platform.core import records as r
from churn_platform.core.canary import CanaryConfig
from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.release import (
    ModelRegistry,
    nothing_staged,
    release,
    stage,
)
from churn_platform.core.rollout import (
    DeploymentTarget,
    EnvironmentState,
    ErrorRate,
    MetricsSource,
    ServedVersion,
)

CANARY = CanaryConfig(steps=(50, 100), analysis_window_seconds=2, interval_seconds=1)


class MemoryTarget:
    """Environments as dicts of version -> weight; records every deploy and retire."""

    def __init__(self, **running: dict[str, int]) -> None:
        self.envs: dict[str, dict[str, int]] = {env: dict(w) for env, w in running.items()}
        self.deployed: list[tuple[str, str, str]] = []
        self.retired: list[tuple[str, str]] = []

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        self.envs.setdefault(environment, {}).setdefault(version, 0)
        self.deployed.append((environment, version, model_uri))
        return ServedVersion(version, model_uri, f"http://{environment}/{version}", 0)

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        env = self.envs[environment]
        assert sum(weights.values()) == 100 and set(weights) <= set(env), (weights, env)
        self.envs[environment] = {v: weights.get(v, 0) for v in env}
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        served = tuple(
            ServedVersion(v, f"models:/m/{v}", f"http://{environment}/{v}", w)
            for v, w in self.envs.get(environment, {}).items()
        )
        return EnvironmentState(environment, f"http://{environment}", served)

    def retire(self, environment: str, version: str) -> None:
        assert self.envs[environment][version] == 0, "retiring a version that carries traffic"
        del self.envs[environment][version]
        self.retired.append((environment, version))


class MemoryRegistry:
    """Aliases and version tags in dicts."""

    def __init__(self, **aliases: str) -> None:
        self.aliases = dict(aliases)
        self.tags: dict[str, dict[str, str]] = {}

    def alias_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        self.tags.setdefault(version, {}).update(tags)

    def model_uri(self, version: str) -> str:
        return f"models:/m/{version}"


class FixedMetrics:
    """Every reading: 100 requests; ``error_rate`` for the ``failing`` version (every version
    when None), 0 for the others (a healthy baseline, so the canary is the one to blame)."""

    def __init__(self, error_rate: float, failing: str | None = None, refused: float = 0.0) -> None:
        self.rate = error_rate
        self.failing = failing
        self.refused = refused  # the failing version's 4xx share

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        failing = self.failing in (None, version)
        rate = self.rate if failing else 0.0
        refused = self.refused if failing else 0.0
        return ErrorRate(version, rate, 100.0, "fixed", client_error_rate=refused)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def decision(candidate: str, promote: bool = True) -> r.EvaluationDecision:
    return r.EvaluationDecision(
        promote=promote,
        reason="Promote: clearly better." if promote else "Keep the champion: no gain.",
        challenger_version=candidate,
        challenger_model_uri=f"models:/m/{candidate}",
        champion_version=None,
        holdout_hash="h",
        rule="interval",
    )


def passing(served: ServedVersion) -> list[CheckOutcome]:
    return [CheckOutcome(r.HEALTH, True, "ok"), CheckOutcome(r.LATENCY, True, "fast")]


def run_release(target, registry, staged, error_rate=0.0, refused=0.0, **kwargs):
    clock = Clock()
    return release(
        target,
        registry,
        FixedMetrics(error_rate, failing=staged.candidate, refused=refused),
        staged,
        CANARY,
        sleep=clock.sleep,
        clock=clock,
        **kwargs,
    )


def test_the_fakes_implement_the_protocols():
    assert isinstance(MemoryTarget(), DeploymentTarget)
    assert isinstance(MemoryRegistry(), ModelRegistry)
    assert isinstance(FixedMetrics(0.0), MetricsSource)


def test_first_release_goes_to_staging_alone_then_becomes_champion():
    target, registry = MemoryTarget(), MemoryRegistry()
    staged = stage(target, registry, decision("1"), passing)
    assert staged.failed == [] and staged.champion is None
    assert target.envs[r.STAGING] == {"1": 100}
    handoff = staged.record
    assert (handoff.action, handoff.candidate, handoff.baseline) == (r.DEPLOY, "1", None)

    done = run_release(target, registry, handoff)
    assert done.record.action == r.PROMOTED
    assert registry.aliases == {r.CHAMPION: "1"}  # no previous: there was none
    assert target.envs[r.PRODUCTION] == {"1": 100}
    assert registry.tags["1"][r.TAG_DEPLOYMENT] == r.PRODUCTION


def test_a_kept_champion_deploys_nothing_anywhere():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1")
    handoff = nothing_staged(decision("2", promote=False))
    done = run_release(target, registry, handoff)
    assert done.canary is None and done.record.action == r.NO_ACTION
    assert done.record.reason == "Keep the champion: no gain."
    assert done.record.champion == "1"
    assert target.deployed == [] and target.retired == []
    assert target.envs[r.PRODUCTION] == {"1": 100}


def test_releasing_the_champion_again_is_a_no_op():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1")
    staged = r.StagingResult(r.DEPLOY, candidate="1", model_uri="models:/m/1")
    done = run_release(target, registry, staged)
    assert done.record.action == r.NO_ACTION
    assert done.record.reason == "version 1 is already the champion"
    assert target.deployed == []


def test_staging_keeps_the_champion_and_only_the_newest_candidate():
    target = MemoryTarget(staging={"1": 100, "2": 0})  # v2: an earlier candidate
    registry = MemoryRegistry(champion="1")
    staged = stage(target, registry, decision("3"), passing)
    assert target.envs[r.STAGING] == {"1": 100, "3": 0}
    assert target.retired == [(r.STAGING, "2")]
    assert staged.state.weights() == {"1": 100, "3": 0}
    assert staged.record.baseline == "1"


def test_staging_starts_the_champion_when_it_is_not_running():
    target, registry = MemoryTarget(), MemoryRegistry(champion="1")
    stage(target, registry, decision("2"), passing)
    assert target.deployed[0] == (r.STAGING, "1", "models:/m/1")
    assert target.envs[r.STAGING] == {"1": 100, "2": 0}


def test_a_failed_staging_check_restores_the_champion_and_retires_the_candidate():
    target = MemoryTarget(staging={"1": 100})
    registry = MemoryRegistry(champion="1")
    seen: list[str] = []

    def failing(served: ServedVersion) -> list[CheckOutcome]:
        seen.append(served.url)
        return [CheckOutcome(r.HEALTH, True, "ok"), CheckOutcome(r.LATENCY, False, "p95 900 ms")]

    staged = stage(target, registry, decision("2"), failing)
    assert seen == ["http://staging/2"]  # the checks ran against the candidate's own server
    assert staged.failed == [r.LATENCY]
    assert target.envs[r.STAGING] == {"1": 100}
    assert (r.STAGING, "2") in target.retired
    assert registry.aliases == {r.CHAMPION: "1"}


def test_a_successful_canary_moves_the_aliases_and_retires_older_versions():
    target = MemoryTarget(production={"1": 100, "0": 0})  # v0: the old previous
    registry = MemoryRegistry(champion="1", previous="0")
    staged = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")
    windows: list[dict[str, int]] = []

    @contextmanager
    def load(state: EnvironmentState) -> Iterator[None]:
        windows.append(state.weights())
        yield

    done = run_release(target, registry, staged, during_canary=load)
    assert done.record.action == r.PROMOTED
    assert windows == [{"1": 100, "0": 0, "2": 0}]  # the load saw both versions running
    assert registry.aliases == {r.CHAMPION: "2", r.PREVIOUS: "1"}
    assert (done.record.champion, done.record.previous) == ("2", "1")
    assert target.envs[r.PRODUCTION] == {"1": 0, "2": 100}  # N-1 kept at 0% for rollback
    assert target.retired == [(r.PRODUCTION, "0")]


def test_a_rolled_back_canary_leaves_the_aliases_and_retires_the_candidate():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1", previous="0")
    staged = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")
    done = run_release(target, registry, staged, error_rate=0.5)
    assert done.record.action == "rolled_back"
    assert done.canary is not None and not done.canary.promoted
    assert registry.aliases == {r.CHAMPION: "1", r.PREVIOUS: "0"}
    assert target.envs[r.PRODUCTION] == {"1": 100}
    assert registry.tags["2"][r.TAG_DEPLOYMENT].startswith("rolled_back: breach")


def test_a_canary_refusing_more_requests_than_the_champion_is_not_released():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1", previous="0")
    staged = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")
    done = run_release(target, registry, staged, refused=0.4)
    assert done.record.action == "aborted", done.record
    assert done.canary is not None and not done.canary.promoted
    assert "4xx rate 40.00% over 100 requests > baseline 0.00%" in done.record.reason
    assert registry.aliases == {r.CHAMPION: "1", r.PREVIOUS: "0"}
    assert target.envs[r.PRODUCTION] == {"1": 100}


def test_a_champion_that_is_not_running_is_started_before_the_canary():
    target = MemoryTarget()  # production lost its servers (e.g. a machine restart)
    registry = MemoryRegistry(champion="1")
    staged = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")
    notes: list[str] = []
    done = run_release(target, registry, staged, log=notes.append)
    assert target.deployed[:2] == [
        (r.PRODUCTION, "1", "models:/m/1"),
        (r.PRODUCTION, "2", "models:/m/2"),
    ]
    assert notes[0] == (
        "repaired before the release: champion v1 was not running in production; started it"
    )
    assert done.repairs[0] == "champion v1 was not running in production; started it"
    assert (
        done.canary is not None and done.canary.baseline == "1"
    )  # a real canary, not a first release
    assert registry.aliases == {r.CHAMPION: "2", r.PREVIOUS: "1"}


@pytest.mark.parametrize("promote", [True, False])
def test_evaluation_decision_names_its_verdict(promote):
    assert decision("2", promote).verdict == ("promote" if promote else "keep")


def test_staging_an_older_candidate_notes_the_newer_one_it_replaced():
    """Two runs at once (issue 27, point 7): the run whose older v2 stages after another run
    staged v3 says so in its notes instead of replacing v3 silently."""
    target = MemoryTarget(staging={"1": 100, "3": 0})
    registry = MemoryRegistry(champion="1", challenger="3")
    staged = stage(target, registry, decision("2"), passing)
    assert target.envs[r.STAGING] == {"1": 100, "2": 0}
    assert len(staged.notes) == 2, staged.notes
    assert "replaced v3 in staging, newer than this run's v2" in staged.notes[0]
    assert "challenger alias names v3" in staged.notes[1]


def test_staging_the_newest_candidate_has_no_notes():
    target = MemoryTarget(staging={"1": 100, "2": 0})
    registry = MemoryRegistry(champion="1", challenger="3")
    assert stage(target, registry, decision("3"), passing).notes == ()


def test_the_run_summary_says_when_its_staged_version_left_staging():
    from churn_platform.cli import staging_lines

    assert staging_lines("2", {"1": 100, "2": 0}) == ["staged: v2 (staging holds v1, v2)"]
    (line,) = staging_lines("2", {"1": 100, "3": 0})
    assert line.startswith("staged: v2, no longer in staging (staging now holds v1, v3")
    assert staging_lines(None, {"1": 100}) == []


def test_the_shadow_thresholds_follow_the_pair_on_the_holdout():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1", previous="0")
    staged = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")
    asked: list[tuple[str, str]] = []
    said: list[str] = []
    rng = np.random.default_rng(0)
    strong = rng.beta(2, 6, 300)
    weak = np.clip(0.25 + 0.1 * strong + 0.02 * rng.standard_normal(300), 0, 1)

    def offline(champion: str, candidate: str) -> tuple[np.ndarray, np.ndarray]:
        asked.append((champion, candidate))
        return weak, strong

    done = run_release(target, registry, staged, offline_scores=offline, log=said.append)
    assert done.record.action == r.PROMOTED
    assert asked == [("1", "2")]  # the champion against this run's candidate
    assert any("shadow thresholds from the holdout (300 rows" in line for line in said), said
