"""The shadow step through real processes: a router mirroring client requests to a candidate
model server, the champion answering every client, and ``run_canary`` deciding on the
servers' own counters and the router's paired record.

A candidate failing every request is stopped in shadow while a client of the production
router sees no error at all; a candidate whose scores are shuffled (no error) is stopped by
the rank correlation; a healthy one passes the shadow and is released through the steps.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from churn_platform.core.canary import (
    CanaryConfig,
    CanaryResult,
    CanaryState,
    Collaborators,
    Rollout,
    run_canary,
)
from churn_platform.resources.metrics_source import ScrapeMetrics
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.targets.local.state import admin_token
from churn_platform.testing import PacedLoad, RegisteredModels, to_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 25.0  # the production asset's synthetic traffic, requests/s


@pytest.fixture(scope="module")
def target(
    registered_models: RegisteredModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcessTarget]:
    work = tmp_path_factory.mktemp("shadow")
    local = LocalProcessTarget(
        work / "deployments",
        registered_models.tracking_uri,
        inference_log_dir=work / "inference_log",
    )
    try:
        yield local
    finally:
        local.stop_all()


def scrape_metrics(target: LocalProcessTarget, env: str) -> ScrapeMetrics:
    """The local default's metrics source: the servers' and the router's own /metrics."""
    return ScrapeMetrics(
        lambda: {v.version: v.url for v in target.state(env).versions},
        router_url=lambda: target.state(env).endpoint,
    )


def release(
    target: LocalProcessTarget,
    models: RegisteredModels,
    env: str,
    candidate_env: dict[str, str],
) -> tuple[CanaryResult, PacedLoad]:
    """Champion v1 at 100%, candidate v2 (with ``candidate_env``) beside it, then the
    default canary while a paced client sends single varied records to the router."""
    target.deploy(env, "1", models.model_uris["1"])
    state = target.set_weights(env, {"1": 100})
    target.deploy(env, "2", models.model_uris["2"], extra_env=candidate_env)
    assert state.endpoint is not None
    rows = to_records(models.rows.head(200))
    with PacedLoad(state.endpoint, rows, rate=RATE, one_by_one=True) as load:
        result = run_canary(
            Collaborators(target, scrape_metrics(target, env)),
            Rollout(env, "2", "1"),
            CanaryConfig(),
        )
    return result, load


def mirror_state(target: LocalProcessTarget, env: str) -> dict[str, object]:
    endpoint = target.state(env).endpoint
    assert endpoint is not None
    token = admin_token(target.store.read(env))
    answer = httpx.get(
        endpoint + "/-/mirror", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    answer.raise_for_status()
    return answer.json()


def shadow_readings(result: CanaryResult) -> list[dict[str, object]]:
    return [t.shadow.as_dict() for t in result.transitions if t.shadow is not None]


def test_a_candidate_failing_every_request_is_stopped_in_shadow_unseen_by_clients(
    target: LocalProcessTarget, registered_models: RegisteredModels
) -> None:
    env = "shadow-failing"
    try:
        result, load = release(target, registered_models, env, {"CHURN_FAULT_RATE": "1"})
        assert result.status is CanaryState.ROLLED_BACK, result.as_markdown()
        assert "shadow failed" in result.reason and "no client request reached 2" in result.reason
        breach = result.breach
        assert breach is not None and breach.step == 0
        assert breach.reading is not None and breach.reading.error_rate == 1.0
        # the candidate never had client traffic: every transition kept it at 0%
        assert all(t.weights.get("2", 0) == 0 for t in result.transitions)
        assert [t.to_state for t in result.transitions][:2] == [
            CanaryState.SHADOWING,
            CanaryState.SHADOWING,
        ]
        # the mirror was real: the candidate answered copies, all of them failures
        readings = shadow_readings(result)
        assert readings and max(int(r["requests"]) for r in readings) > 0  # type: ignore[call-overload]
        assert all(r["candidate_error_rate"] in (None, 1.0) for r in readings)
        # whole release, client side: every answer 200, from the champion
        assert len(load.results) > 10
        assert {s for _, s, _ in load.results} == {200}
        assert {v for _, _, v in load.results} == {"1"}
        assert mirror_state(target, env) == {"mirror": None, "record": None}
        assert target.state(env).weights() == {"1": 100, "2": 0}
        assert "shadow comparison" in result.as_markdown()
    finally:
        target.stop_all(env)


def test_a_candidate_with_shuffled_scores_is_stopped_by_the_rank_correlation(
    target: LocalProcessTarget, registered_models: RegisteredModels
) -> None:
    env = "shadow-shuffled"
    try:
        result, load = release(
            target,
            registered_models,
            env,
            {"CHURN_FAULT_RATE": "1", "CHURN_FAULT_MODE": "shuffle", "CHURN_FAULT_SEED": "5"},
        )
        assert result.status is CanaryState.ROLLED_BACK, result.as_markdown()
        assert "shadow failed: rank correlation" in result.reason, result.reason
        breach = result.breach
        assert breach is not None and breach.step == 0
        last = shadow_readings(result)[-1]
        assert last["candidate_error_rate"] == 0.0  # no error: only the ranking is wrong
        assert isinstance(last["rank_correlation"], float) and last["rank_correlation"] < 0.7
        assert int(last["pairs"]) >= CanaryConfig().shadow_min_pairs  # type: ignore[call-overload]
        assert all(t.weights.get("2", 0) == 0 for t in result.transitions)
        assert {v for _, _, v in load.results} == {"1"}
    finally:
        target.stop_all(env)


def test_a_healthy_candidate_passes_the_shadow_and_is_released(
    target: LocalProcessTarget, registered_models: RegisteredModels
) -> None:
    env = "shadow-healthy"
    try:
        result, load = release(target, registered_models, env, {})
        assert result.status is CanaryState.SUCCEEDED, result.as_markdown()
        passed = next(t for t in result.transitions if t.reason.startswith("shadow passed"))
        assert passed.to_state is CanaryState.PROGRESSING and passed.weights == {"1": 100, "2": 0}
        last = shadow_readings(result)[-1]
        assert isinstance(last["rank_correlation"], float) and last["rank_correlation"] > 0.9
        assert isinstance(last["score_psi"], float) and last["score_psi"] < 0.25
        steps = [t.step for t in result.transitions if t.to_state is CanaryState.ANALYSING]
        assert {5, 25, 100} <= set(steps)
        assert target.state(env).weights() == {"1": 0, "2": 100}
        assert {s for _, s, _ in load.results} == {200}
        # the mirror is off once the shadow passed
        assert mirror_state(target, env) == {"mirror": None, "record": None}
    finally:
        target.stop_all(env)


def test_the_mirror_endpoint_refuses_without_the_token_or_for_an_unknown_version(
    target: LocalProcessTarget, registered_models: RegisteredModels
) -> None:
    env = "shadow-admin"
    try:
        target.deploy(env, "1", registered_models.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        assert state.endpoint is not None
        body = {"mirror": {"version": "1", "percent": 100}}
        assert httpx.put(state.endpoint + "/-/mirror", json=body).status_code == 401
        assert httpx.get(state.endpoint + "/-/mirror").status_code == 401
        with pytest.raises(ValueError, match="not running"):
            target.set_mirror(env, "9")
        token = admin_token(target.store.read(env))
        bad = httpx.put(
            state.endpoint + "/-/mirror",
            json={"mirror": {"version": "9"}},
            headers={"authorization": f"Bearer {token}"},
        )
        assert bad.status_code == 422 and "not in the backend table" in bad.json()["error"]
        assert mirror_state(target, env) == {"mirror": None, "record": None}
    finally:
        target.stop_all(env)


def test_a_hung_candidate_never_holds_up_clients_and_excess_copies_are_dropped(
    target: LocalProcessTarget, registered_models: RegisteredModels
) -> None:
    """The mirror's version accepts connections and never answers: every client still gets
    the champion's 200, and beyond the bound of copies under way they are dropped, counted."""
    env = "shadow-hung"
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1024)  # the kernel completes the connections; nothing ever reads or answers
    try:
        target.deploy(env, "1", registered_models.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        assert state.endpoint is not None
        headers = {"authorization": f"Bearer {admin_token(target.store.read(env))}"}
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        table = {"backends": {"9": {"url": url, "weight": 0}, "1": {"weight": 100}}}
        assert httpx.put(state.endpoint + "/-/weights", json=table, headers=headers).is_success
        mirror = {"mirror": {"version": "9", "percent": 100}}
        assert httpx.put(state.endpoint + "/-/mirror", json=mirror, headers=headers).is_success
        rows = to_records(registered_models.rows.head(20))
        with httpx.Client(base_url=state.endpoint, timeout=20) as client:
            answers = [
                client.post("/predict", json={"records": [rows[i % len(rows)]]}) for i in range(150)
            ]
            metrics = client.get("/metrics").text
        assert {a.status_code for a in answers} == {200}
        assert {a.headers["x-model-version"] for a in answers} == {"1"}
        dropped = [
            line for line in metrics.splitlines()
            if line.startswith('router_shadow_dropped_total{backend="9"}')
        ]  # fmt: skip
        assert dropped and float(dropped[0].split()[-1]) >= 50, dropped
        record = mirror_state(target, env)["record"]
        assert isinstance(record, dict) and record["dropped"] >= 50
    finally:
        hung.close()
        target.stop_all(env)
