"""Restore and rollback with real processes: every server SIGKILLed (a reboot), then
``restore`` brings the champion back at the same URL; a rollback to a version that no
longer runs starts it from the registry and moves all traffic to it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from churn_platform.core import records as r
from churn_platform.core.release import reconcile, rollback
from churn_platform.serving.__main__ import main as serving_main
from churn_platform.targets.local import LocalProcessTarget, is_running
from churn_platform.testing import RegisteredModels, to_records

pytestmark = pytest.mark.integration


class Registry:
    """The ``ModelRegistry`` protocol over the session's registered versions (aliases in a dict)."""

    def __init__(self, models: RegisteredModels, **aliases: str) -> None:
        self.models, self.aliases = models, dict(aliases)
        self.tags: dict[str, dict[str, str]] = {}

    def alias_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        self.tags.setdefault(version, {}).update(tags)

    def model_uri(self, version: str) -> str:
        return self.models.model_uris[version]


def kill_everything(target: LocalProcessTarget, environment: str) -> None:
    saved = json.loads(target.state_file(environment).read_text())
    pids = [rec["pid"] for rec in saved["versions"].values()] + [saved["router"]["pid"]]
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)
    for pid in pids:
        while is_running(pid):  # SIGKILL is not instant on a loaded machine
            time.sleep(0.05)


def answers(endpoint: str, models: RegisteredModels) -> str:
    record = to_records(models.rows.head(1))
    answer = httpx.post(endpoint + "/predict", json={"records": record}, timeout=30.0)
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]


def test_all_servers_killed_then_restore_serves_the_champion_at_the_same_url(
    registered_models: RegisteredModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = LocalProcessTarget(tmp_path / "deployments", registered_models.tracking_uri)
    try:
        target.deploy(r.PRODUCTION, "1", registered_models.model_uris["1"])
        target.deploy(r.PRODUCTION, "2", registered_models.model_uris["2"])
        endpoint = target.set_weights(r.PRODUCTION, {"2": 100}).endpoint
        assert endpoint
        kill_everything(target, r.PRODUCTION)
        assert target.state(r.PRODUCTION).endpoint is None

        assert serving_main(["restore", "--state-dir", str(target.state_dir)]) == 0
        printed = capsys.readouterr().out
        assert "router of production was down" in printed and "v2 of production" in printed
        state = target.state(r.PRODUCTION)
        assert state.endpoint == endpoint and state.weights() == {"1": 0, "2": 100}
        assert target.live_weights(r.PRODUCTION) == {"1": 0, "2": 100}
        assert answers(endpoint, registered_models) == "2"
        assert target.restore(r.PRODUCTION) == []  # nothing left to repair
        assert serving_main(["status", "--state-dir", str(target.state_dir)]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["production"]["live_weights"] == {"1": 0, "2": 100}
    finally:
        target.stop_all()


def test_reconcile_after_a_killed_canary_and_rollback_to_a_retired_version(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    target = LocalProcessTarget(tmp_path / "deployments", registered_models.tracking_uri)
    registry = Registry(registered_models, champion="1")
    try:
        target.deploy(r.PRODUCTION, "1", registered_models.model_uris["1"])
        target.deploy(r.PRODUCTION, "2", registered_models.model_uris["2"])
        endpoint = target.set_weights(r.PRODUCTION, {"1": 75, "2": 25}).endpoint
        assert endpoint
        kill_everything(target, r.PRODUCTION)  # SIGKILL of the run at the 25% step, and a reboot

        repairs = reconcile(target, registry, r.PRODUCTION)
        assert any("router of production was down" in line for line in repairs)
        assert target.live_weights(r.PRODUCTION) == {"1": 100, "2": 0}
        assert target.state(r.PRODUCTION).endpoint == endpoint

        # v2 becomes champion, v1 is retired; then a rollback on demand to v1 (cold)
        target.set_weights(r.PRODUCTION, {"2": 100})
        target.retire(r.PRODUCTION, "1")
        registry.aliases = {r.CHAMPION: "2", r.PREVIOUS: "1"}
        # how long this takes (cold and warm) is a benchmark's job (bench_rollback_on_demand)
        done = rollback(target, registry, reason="test", sleep=lambda s: None)
        assert done.repairs == ("v1 was not running in production; started it from the registry",)
        assert target.live_weights(r.PRODUCTION) == {"1": 100, "2": 0}
        assert answers(endpoint, registered_models) == "1"
        assert registry.aliases == {r.CHAMPION: "1", r.PREVIOUS: "2"}
        # warm: both run, the swap back is a weight change
        rollback(target, registry, sleep=lambda s: None)
        assert answers(endpoint, registered_models) == "2"
    finally:
        target.stop_all()


class InterruptAt:
    """Healthy readings until the candidate carries ``percent`` of the real router's
    traffic, then Ctrl-C (the person at the terminal)."""

    def __init__(self, target: LocalProcessTarget, candidate: str, percent: int) -> None:
        self.target, self.candidate, self.percent = target, candidate, percent

    def error_rate(self, version: str, window_seconds: float):
        from churn_platform.core.rollout import ErrorRate

        if (self.target.live_weights(r.PRODUCTION) or {}).get(self.candidate) == self.percent:
            raise KeyboardInterrupt
        return ErrorRate(version, 0.0, 100.0, "fixed")


def test_ctrl_c_at_25_percent_leaves_the_real_router_on_the_champion(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    from churn_platform.core.canary import CanaryConfig
    from churn_platform.core.release import release

    target = LocalProcessTarget(tmp_path / "deployments", registered_models.tracking_uri)
    registry = Registry(registered_models, champion="1")
    staged = r.StagingResult(
        r.DEPLOY, candidate="2", model_uri=registered_models.model_uris["2"], baseline="1"
    )
    now = [0.0]
    try:
        target.deploy(r.PRODUCTION, "1", registered_models.model_uris["1"])
        endpoint = target.set_weights(r.PRODUCTION, {"1": 100}).endpoint
        with pytest.raises(KeyboardInterrupt):
            release(
                target,
                registry,
                InterruptAt(target, "2", 25),
                staged,
                # no shadow step: no traffic here to mirror, and the interrupt is at a step
                CanaryConfig(
                    steps=(5, 25, 100), analysis_window_seconds=2, interval_seconds=1, shadow=False
                ),
                sleep=lambda s: now.__setitem__(0, now[0] + s),
                clock=lambda: now[0],
            )
        assert target.live_weights(r.PRODUCTION) == {"1": 100}  # the canary is retired too
        assert answers(endpoint or "", registered_models) == "1"
        assert registry.aliases == {r.CHAMPION: "1"}
    finally:
        target.stop_all()
