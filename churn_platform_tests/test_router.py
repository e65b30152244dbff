"""The weighted router as a real process in front of two real model servers."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from churn_platform import testing
from churn_platform.resources.metrics_source import ScrapeMetrics
from churn_platform.serving.router.table import Backend, SmoothWeightedRoundRobin
from churn_platform.targets.local import (
    bind_socket,
)
from churn_platform.testing import (
    RegisteredModels,
    RunningServer,
    start_model_server,
    to_records,
)

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def servers(
    registered_models: RegisteredModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RunningServer]]:
    work = tmp_path_factory.mktemp("router-backends")
    with (
        start_model_server(registered_models, "1", work) as one,
        start_model_server(registered_models, "2", work) as two,
    ):
        yield {"1": one, "2": two}


def start_router(state_file: Path, port: int = 0) -> contextlib.AbstractContextManager[str]:
    return testing.start_router(state_file, {"CHURN_ROUTER_ADMIN_TOKEN": TOKEN}, port)


def table(servers: dict[str, RunningServer], w1: int, w2: int) -> dict:
    return {
        "backends": {
            "1": {"url": servers["1"].url, "weight": w1},
            "2": {"url": servers["2"].url, "weight": w2},
        }
    }


def test_smooth_round_robin_follows_weights_exactly_and_interleaves() -> None:
    rr = SmoothWeightedRoundRobin(
        {"a": Backend("a", "http://a", 95), "b": Backend("b", "http://b", 5)}
    )
    picks = [rr.pick().version for _ in range(200)]  # type: ignore[union-attr]
    assert Counter(picks) == {"a": 190, "b": 10}
    b_positions = [i for i, v in enumerate(picks) if v == "b"]
    assert max(b - a for a, b in zip(b_positions, b_positions[1:], strict=False)) <= 21
    assert SmoothWeightedRoundRobin({}).pick() is None


def test_traffic_splits_as_weighted(
    servers: dict[str, RunningServer],
    registered_models: RegisteredModels,
    tmp_path: Path,
) -> None:
    record = to_records(registered_models.rows.head(1))
    with start_router(tmp_path / "router.json") as url, httpx.Client(base_url=url) as client:
        r = client.put("/-/weights", headers=AUTH, json=table(servers, 80, 20))
        assert r.status_code == 200, r.text
        seen = Counter()
        for _ in range(200):
            answer = client.post("/predict", json={"records": record})
            assert answer.status_code == 200
            # the header and the server's own answer agree on who scored it
            assert answer.headers["x-model-version"] == answer.json()["model_version"]
            seen[answer.json()["model_version"]] += 1
        assert seen == {"1": 160, "2": 40}


def test_weight_change_under_concurrent_load_drops_nothing(
    servers: dict[str, RunningServer],
    registered_models: RegisteredModels,
    tmp_path: Path,
) -> None:
    record = to_records(registered_models.rows.head(1))
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    with start_router(tmp_path / "router.json") as url:
        httpx.put(url + "/-/weights", headers=AUTH, json=table(servers, 100, 0)).raise_for_status()

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    try:
                        r = client.post("/predict", json={"records": record})
                        status, version = r.status_code, r.headers.get("x-model-version", "")
                    except httpx.HTTPError as exc:
                        status, version = -1, type(exc).__name__
                    with lock:
                        statuses[status] += 1
                        versions[version] += 1

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            with httpx.Client(base_url=url, headers=AUTH) as admin:
                for w2 in (5, 25, 50, 100, 0, 50, 100):
                    r = admin.put("/-/weights", json={"weights": {"1": 100 - w2, "2": w2}})
                    assert r.status_code == 200, r.text
                    assert admin.get("/-/weights").json()["backends"]["2"]["weight"] == w2
                    stop.wait(0.4)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert sum(statuses.values()) > 100
    assert set(statuses) == {200}, statuses
    assert versions["1"] > 0 and versions["2"] > 0


def test_restarted_router_resumes_its_weights(
    servers: dict[str, RunningServer], tmp_path: Path
) -> None:
    state = tmp_path / "router.json"
    with start_router(state) as url:
        httpx.put(url + "/-/weights", headers=AUTH, json=table(servers, 30, 70)).raise_for_status()
    assert json.loads(state.read_text())["backends"]["2"]["weight"] == 70
    with start_router(state) as url:
        backends = httpx.get(url + "/-/weights").json()["backends"]
        assert backends == table(servers, 30, 70)["backends"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"weights": {"1": 60, "2": 60}}, ["sum to 100", "120"]),
        ({"weights": {"1": 100, "7": 0}}, ["unknown version", "7"]),
        ({"weights": {"1": 50.5, "2": 49.5}}, ["whole percent"]),
        ({"backends": {"9": {"weight": 100}}}, ["9", "url"]),
        ({"split": 1}, ["weights"]),
    ],
)
def test_bad_weight_changes_are_refused_and_change_nothing(
    servers: dict[str, RunningServer], tmp_path: Path, body: dict, words: list[str]
) -> None:
    with start_router(tmp_path / "router.json") as url:
        httpx.put(url + "/-/weights", headers=AUTH, json=table(servers, 100, 0)).raise_for_status()
        r = httpx.put(url + "/-/weights", headers=AUTH, json=body)
        assert r.status_code == 422
        for word in words:
            assert word in r.json()["error"]
        assert httpx.get(url + "/-/weights").json() == table(servers, 100, 0)


def test_no_traffic_and_dead_backend_are_explained(tmp_path: Path) -> None:
    with start_router(tmp_path / "router.json") as url:
        r = httpx.post(url + "/predict", json={"records": [{}]})
        assert r.status_code == 503 and "PUT /-/weights" in r.json()["error"]
        dead = bind_socket()  # a port that accepts nothing once closed
        dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
        dead.close()
        body = {"backends": {"1": {"url": dead_url, "weight": 100}}}
        httpx.put(url + "/-/weights", headers=AUTH, json=body).raise_for_status()
        r = httpx.post(url + "/predict", json={"records": [{}]})
        assert r.status_code == 502 and "did not answer" in r.json()["error"]


def test_requests_the_router_cannot_deliver_count_as_that_versions_errors(
    servers: dict[str, RunningServer],
    registered_models: RegisteredModels,  # noqa: F811
    tmp_path: Path,
) -> None:
    # issue 13.4: the router answered 502 for a version it could not reach and the canary
    # analysis never saw those failures; now they are that version's errors
    dead = bind_socket()
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()
    with start_router(tmp_path / "router.json") as url:
        body = {
            "backends": {
                "1": {"url": servers["1"].url, "weight": 50},
                "2": {"url": dead_url, "weight": 50},
            }
        }
        httpx.put(url + "/-/weights", headers=AUTH, json=body).raise_for_status()
        metrics = ScrapeMetrics({"2": servers["2"].url, "1": servers["1"].url}, router_url=url)
        assert metrics.error_rate("2", 0).error_rate is None  # first scrape: the base
        assert metrics.error_rate("1", 0).error_rate is None
        record = to_records(registered_models.rows.head(1))
        statuses = Counter(
            httpx.post(url + "/predict", json={"records": record}).status_code for _ in range(20)
        )
        assert statuses == {200: 10, 502: 10}
        reading = metrics.error_rate("2", 0)
        assert (reading.error_rate, reading.request_count) == (1.0, 10.0), reading
        healthy = metrics.error_rate("1", 0)
        assert (healthy.error_rate, healthy.request_count) == (0.0, 10.0), healthy
        assert healthy.latency_p95_seconds is not None and healthy.latency_p95_seconds < 2.5


def test_weights_change_without_the_admin_token_is_refused(
    servers: dict[str, RunningServer], tmp_path: Path
) -> None:
    # issue 14.7: any local process could redirect an environment to any URL
    with start_router(tmp_path / "router.json") as url:
        httpx.put(url + "/-/weights", headers=AUTH, json=table(servers, 100, 0)).raise_for_status()
        hijack = {"backends": {"1": {"url": "http://127.0.0.1:9", "weight": 100}}}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            r = httpx.put(url + "/-/weights", headers=headers, json=hijack)
            assert r.status_code == 401, r.text
            assert "Authorization: Bearer" in r.json()["error"]
        assert httpx.get(url + "/-/weights").json() == table(servers, 100, 0)
        saved = json.loads((tmp_path / "router.json").read_text())
        assert saved == table(servers, 100, 0)


def test_router_speaks_mlflow_protocol_for_its_environment(
    servers: dict[str, RunningServer],
    registered_models: RegisteredModels,  # noqa: F811
    tmp_path: Path,
) -> None:
    frame = registered_models.rows.head(3)
    records = to_records(frame)
    with start_router(tmp_path / "router.json") as url:
        # no version carries traffic yet: the environment is not serving
        assert httpx.get(url + "/health").status_code == 503
        assert httpx.get(url + "/ping").status_code == 503
        httpx.put(url + "/-/weights", headers=AUTH, json=table(servers, 100, 0)).raise_for_status()
        assert httpx.get(url + "/health").json()["status"] == "ok"
        assert httpx.get(url + "/ping").status_code == 200
        assert httpx.get(url + "/version").text == importlib.metadata.version("mlflow")
        ours = httpx.post(url + "/predict", json={"records": records}).json()["probabilities"]
        r = httpx.post(url + "/invocations", json={"dataframe_records": records})
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        assert r.json() == {"predictions": ours, "request_id": r.headers["x-request-id"]}
        bad = httpx.post(url + "/invocations", json={"records": records})
        assert bad.status_code == 400 and bad.json()["error_code"] == "BAD_REQUEST"


def test_router_refuses_a_huge_body_unread_while_small_requests_keep_answering(
    servers: dict[str, RunningServer],
    registered_models: RegisteredModels,  # noqa: F811
    tmp_path: Path,
) -> None:
    record = to_records(registered_models.rows.head(1))
    with start_router(tmp_path / "router.json") as url:
        httpx.put(url + "/-/weights", headers=AUTH, json=table(servers, 100, 0)).raise_for_status()
        big = b"x" * 50_000_000
        r = httpx.post(url + "/predict", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "CHURN_MAX_BODY_BYTES" in r.json()["error"]
        for _ in range(20):
            assert httpx.post(url + "/predict", json={"records": record}).status_code == 200
