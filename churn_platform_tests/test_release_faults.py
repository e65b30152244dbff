"""Faults during a release (issue 14), with the in-memory fakes of ``test_release``:
an interrupted canary ends on the champion, leftovers are reconciled before the next
release, a registry that refuses the alias move is retried then reported with the
repair command, each run releases the candidate it staged, and rollback on demand."""

from __future__ import annotations

import pytest

from churn_platform.core import records as r
from churn_platform.core.release import (
    ALIAS_ATTEMPTS,
    ROLLBACK,
    reconcile,
    release,
    rollback,
    select_candidate,
)
from churn_platform_tests.test_release import (
    CANARY,
    Clock,
    FixedMetrics,
    MemoryRegistry,
    MemoryTarget,
    run_release,
)

STAGED_2 = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")


class InterruptingMetrics(FixedMetrics):
    """Healthy readings until the canary carries ``at`` percent, then Ctrl-C."""

    def __init__(self, target: MemoryTarget, at: int) -> None:
        super().__init__(0.0)
        self.target, self.at = target, at

    def error_rate(self, version, window_seconds):
        if self.target.envs[r.PRODUCTION].get("2") == self.at:
            raise KeyboardInterrupt
        return super().error_rate(version, window_seconds)


class FlakyRegistry(MemoryRegistry):
    """``set_alias`` raises its first ``failures`` calls (a locked database)."""

    def __init__(self, failures: int, **aliases: str) -> None:
        super().__init__(**aliases)
        self.failures = failures

    def set_alias(self, alias: str, version: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("database is locked")
        super().set_alias(alias, version)


def test_ctrl_c_mid_canary_leaves_all_traffic_on_the_champion():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1")
    clock = Clock()
    with pytest.raises(KeyboardInterrupt):
        release(
            target,
            registry,
            InterruptingMetrics(target, at=50),
            STAGED_2,
            CANARY,
            sleep=clock.sleep,
            clock=clock,
        )
    assert target.envs[r.PRODUCTION] == {"1": 100}
    assert registry.aliases == {r.CHAMPION: "1"}


def test_an_exception_in_staging_checks_puts_staging_back_on_the_champion():
    from churn_platform.core.release import stage
    from churn_platform_tests.test_release import decision

    target = MemoryTarget(staging={"1": 100})

    def verify(served):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stage(target, MemoryRegistry(champion="1"), decision("2"), verify)
    assert target.envs[r.STAGING] == {"1": 100}


def test_leftover_canary_weights_are_reconciled_and_reported_before_the_next_release():
    target = MemoryTarget(production={"1": 75, "2": 25})  # a SIGKILLed canary's leftovers
    registry = MemoryRegistry(champion="1")
    repairs = reconcile(target, registry, r.PRODUCTION)
    assert target.envs[r.PRODUCTION] == {"1": 100, "2": 0}
    assert repairs == ["production traffic was {'1': 75, '2': 25}; now 100% on champion v1"]
    assert reconcile(target, registry, r.PRODUCTION) == []  # nothing left to repair
    done = run_release(MemoryTarget(production={"1": 75, "2": 25}), registry, STAGED_2)
    assert done.repairs and done.record.action == r.PROMOTED


def test_a_registry_that_fails_briefly_is_retried():
    target = MemoryTarget(production={"1": 100})
    registry = FlakyRegistry(ALIAS_ATTEMPTS - 1, champion="1")
    done = run_release(target, registry, STAGED_2)
    assert done.alias_error is None and done.repair is None
    assert registry.aliases == {r.CHAMPION: "2", r.PREVIOUS: "1"}


def test_a_registry_that_keeps_failing_is_reported_with_the_repair_command():
    target = MemoryTarget(production={"1": 100})
    registry = FlakyRegistry(100, champion="1")
    done = run_release(target, registry, STAGED_2)
    assert target.envs[r.PRODUCTION] == {"1": 0, "2": 100}  # the rollout itself succeeded
    assert registry.aliases == {r.CHAMPION: "1"}
    assert done.alias_error and "database is locked" in done.alias_error
    assert done.repair == "python -m churn_platform rollback --to 2"
    # the repair command's core: traffic stays on v2, the aliases follow
    registry.failures = 0
    fixed = rollback(target, registry, "2", sleep=lambda s: None)
    assert registry.aliases == {r.CHAMPION: "2", r.PREVIOUS: "1"}
    assert fixed.alias_error is None and target.envs[r.PRODUCTION]["2"] == 100


def test_each_run_releases_the_candidate_it_staged():
    mine = r.StagingResult(r.DEPLOY, candidate="10", model_uri="models:/m/10", baseline="9")
    theirs = r.StagingResult(r.DEPLOY, candidate="11", model_uri="models:/m/11", baseline="9")
    chosen, notes = select_candidate(mine, theirs, challenger="11")
    assert chosen == mine
    assert any("v11" in n and "v10" in n for n in notes)
    # the approval job stages nothing itself: it ships the stored one, and names a newer one
    chosen, notes = select_candidate(None, mine, challenger="11")
    assert chosen == mine
    assert notes == (
        "the challenger alias names v11, newer than the v10 released here; it is not shipped "
        "by this run (run churn_retraining/churn_release for it)",
    )
    assert select_candidate(None, mine, challenger="10") == (mine, ())


def test_rollback_after_two_promotions_swaps_traffic_and_aliases():
    target = MemoryTarget(production={"1": 100})
    registry = MemoryRegistry(champion="1")
    run_release(target, registry, STAGED_2)
    staged_3 = r.StagingResult(r.DEPLOY, candidate="3", model_uri="models:/m/3", baseline="2")
    run_release(target, registry, staged_3)
    assert registry.aliases == {r.CHAMPION: "3", r.PREVIOUS: "2"}
    done = rollback(target, registry, reason="5xx alert", sleep=lambda s: None)
    assert target.envs[r.PRODUCTION] == {"2": 100, "3": 0}
    assert registry.aliases == {r.CHAMPION: "2", r.PREVIOUS: "3"}
    assert done.record.action == ROLLBACK and "5xx alert" in done.record.reason
    assert registry.tags["3"][r.TAG_DEPLOYMENT] == "rolled_back: 5xx alert"
    # to a named version no longer running: started from the registry first
    done = rollback(target, registry, "1", sleep=lambda s: None)
    assert (r.PRODUCTION, "1", "models:/m/1") in target.deployed
    assert target.envs[r.PRODUCTION]["1"] == 100
    assert registry.aliases == {r.CHAMPION: "1", r.PREVIOUS: "2"}
    assert done.repairs == ("v1 was not running in production; started it from the registry",)


def test_rollback_without_previous_says_what_to_do():
    with pytest.raises(ValueError, match="--to VERSION"):
        rollback(MemoryTarget(production={"1": 100}), MemoryRegistry(champion="1"))


def test_traffic_that_disagrees_with_the_champion_alias_is_flagged_with_the_fix():
    from churn_platform.core.release import traffic_disagreement

    assert traffic_disagreement("11", {"11": 100, "10": 0}) is None
    problem = traffic_disagreement("11", {"11": 0, "12": 100})
    assert problem and "router sends v12 100%" in problem
    assert "python -m churn_platform rollback --to 12" in problem
    assert "serving restore" in (traffic_disagreement("11", None) or "")
    # issue 27.8: an interrupted canary (champion still leads) gets two distinct commands
    canary = traffic_disagreement("11", {"11": 95, "12": 5}) or ""
    commands = [part.split(": ", 1)[1] for part in canary.split("; ")[1:]]
    assert commands == [
        "python -m churn_platform rollback --to 12",
        "python -m churn_platform rollback --to 11",
    ]


def test_the_repaired_line_lists_a_slot_once():
    from churn_platform.runs import Repair

    line = str(Repair("r1", "job", True, ("churn_deployment/step", "churn_deployment/step")))
    assert line.count("churn_deployment/step") == 1
