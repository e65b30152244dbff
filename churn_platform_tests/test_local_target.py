"""LocalProcessTarget with real processes: deploy, shift, retire, survive, stop."""

from __future__ import annotations

import gc
import json
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from churn_platform.core.rollout import DeploymentTarget
from churn_platform.targets.local import LocalProcessTarget, is_running
from churn_platform.testing import (
    RegisteredModels,
    to_records,
)

pytestmark = pytest.mark.integration


def make_target(models: RegisteredModels, tmp_path: Path) -> LocalProcessTarget:
    return LocalProcessTarget(
        tmp_path / "deployments",
        models.tracking_uri,
        inference_log_dir=tmp_path / "inference_log",
    )


def split(url: str, record: list[dict], n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=url) as client:
        for _ in range(n):
            r = client.post("/predict", json={"records": record})
            assert r.status_code == 200, r.text
            seen[r.json()["model_version"]] += 1
    return seen


def test_deploy_shift_retire_survive_and_stop(
    registered_models: RegisteredModels,
    tmp_path: Path,
) -> None:
    target = make_target(registered_models, tmp_path)
    assert isinstance(target, DeploymentTarget)
    record = to_records(registered_models.rows.head(1))
    pids: list[int] = []
    try:
        one = target.deploy("staging", "1", registered_models.model_uris["1"])
        assert one.weight == 0 and httpx.get(one.url + "/health").status_code == 200
        # a second deploy of the same version is a no-op
        assert target.deploy("staging", "1", registered_models.model_uris["1"]).url == one.url
        state = target.set_weights("staging", {"1": 100})
        assert state.weights() == {"1": 100} and state.endpoint
        two = target.deploy("staging", "2", registered_models.model_uris["2"])
        assert two.url != one.url
        assert target.state("staging").weights() == {"1": 100, "2": 0}

        state = target.set_weights("staging", {"1": 75, "2": 25})
        assert split(state.endpoint, record, 100) == {"1": 75, "2": 25}

        # the state file records every process
        saved = json.loads(target.state_file("staging").read_text())
        assert {v: r["weight"] for v, r in saved["versions"].items()} == {"1": 75, "2": 25}
        pids = [r["pid"] for r in saved["versions"].values()] + [saved["router"]["pid"]]
        assert all(is_running(p) for p in pids)
        assert (target.state_dir / "staging" / "logs" / "model-2.log").exists()

        # issue 14.7: the router's admin token lives in the owner-only state file; a weights
        # change without it is refused and the split stays as it was
        assert stat.S_IMODE(target.state_file("staging").stat().st_mode) == 0o600
        token = saved["admin_token"]
        assert len(token) >= 32
        hijack = {"backends": {"1": {"url": "http://127.0.0.1:9", "weight": 100}}}
        assert httpx.put(state.endpoint + "/-/weights", json=hijack).status_code == 401
        assert httpx.get(state.endpoint + "/-/weights").json()["backends"]["1"]["weight"] == 75
        assert split(state.endpoint, record, 100) == {"1": 75, "2": 25}

        # Prometheus file_sd lists both servers
        groups = json.loads(target.targets_file.read_text())
        ports = {t.rsplit(":", 1)[1] for g in groups for t in g["targets"]}
        assert ports == {str(r["port"]) for r in saved["versions"].values()}
        assert groups[0]["labels"] == {"environment": "staging"}

        with pytest.raises(ValueError, match="set_weights"):
            target.retire("staging", "2")
        with pytest.raises(ValueError, match="sum to 100"):
            target.set_weights("staging", {"1": 50})
        with pytest.raises(ValueError, match="deploy them first"):
            target.set_weights("staging", {"1": 50, "3": 50})

        endpoint = state.endpoint
        # the processes outlive the object that started them
        del target, state, one, two
        gc.collect()
        target = make_target(registered_models, tmp_path)
        assert all(is_running(p) for p in pids)
        assert target.state("staging").endpoint == endpoint
        assert split(endpoint, record, 20) == {"1": 15, "2": 5}

        target.set_weights("staging", {"1": 100})
        retired_pid = saved["versions"]["2"]["pid"]
        target.retire("staging", "2")
        assert not is_running(retired_pid)
        assert target.state("staging").weights() == {"1": 100}
        assert split(endpoint, record, 10) == {"1": 10}
        assert len(json.loads(target.targets_file.read_text())[0]["targets"]) == 1
    finally:
        stopped = make_target(registered_models, tmp_path).stop_all("staging")
    assert set(stopped) == {p for p in pids if p != retired_pid}
    assert not any(is_running(p) for p in pids)
    assert make_target(registered_models, tmp_path).state("staging").versions == ()


def test_a_server_that_cannot_start_fails_with_its_log(
    registered_models: RegisteredModels,
    tmp_path: Path,
) -> None:
    target = make_target(registered_models, tmp_path)
    try:
        with pytest.raises(RuntimeError) as info:
            target.deploy("staging", "7", "models:/churn_model/77")
        message = str(info.value)
        assert "failed to load" in message and "Last log lines" in message
        assert "churn_model" in message
        assert target.state("staging").versions == ()
    finally:
        target.stop_all("staging")


def test_cli_lists_and_stops_what_runs(
    registered_models: RegisteredModels,
    tmp_path: Path,
) -> None:
    target = make_target(registered_models, tmp_path)
    cli = [sys.executable, "-m", "churn_platform.serving"]
    state_dir = ["--state-dir", str(target.state_dir)]
    try:
        target.deploy("production", "1", registered_models.model_uris["1"])
        target.set_weights("production", {"1": 100})
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        out = subprocess.run(
            [*cli, "status", "--environment", "production", *state_dir],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        status = json.loads(out.stdout)["production"]
        assert status["versions"]["1"]["running"] and status["router"]["running"]
        out = subprocess.run(
            [*cli, "stop", "--environment", "production", *state_dir],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert "stopped 2 process(es)" in out.stdout
        assert target.state("production").versions == ()
        assert not is_running(status["versions"]["1"]["pid"])
    finally:
        target.stop_all()
