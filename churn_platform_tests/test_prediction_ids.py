"""Predictions carry identity (issue #23): the spec's entity id in a record and the request
id (``X-Request-Id``, else generated) are taken by ``/predict`` and ``/invocations`` on a
real model server and through a real router, echoed in the answer and written on the
inference log rows of the request; neither reaches the model; a bad one is a 4xx naming it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from churn_platform.core import drift
from churn_platform.core import schema as s
from churn_platform.core.drift_monitor import judge_windows
from churn_platform.core.spec import default_spec
from churn_platform.resources.inference_log_reader import InferenceLogResource
from churn_platform.serving.inference_log import InferenceLog, read_inference_log
from churn_platform.testing import (
    RegisteredModels,
    RunningServer,
    canonical,
    start_model_server,
    start_router,
    to_records,
)

pytestmark = pytest.mark.integration

TOKEN = "ids-admin-token"
GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server(
    registered_models: RegisteredModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with start_model_server(registered_models, "1", tmp_path_factory.mktemp("ids")) as srv:
        yield srv


@pytest.fixture(scope="module")
def router(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("ids-router") / "router.json"
    with start_router(state, {"CHURN_ROUTER_ADMIN_TOKEN": TOKEN}) as url:
        weights = {"backends": {"1": {"url": server.url, "weight": 100}}}
        auth = {"authorization": f"Bearer {TOKEN}"}
        httpx.put(url + "/-/weights", headers=auth, json=weights).raise_for_status()
        yield url


def with_ids(registered_models: RegisteredModels, n: int) -> tuple[list[dict], list[str]]:
    """``n`` request records, each with the spec's entity id (``customer_id``) in it."""
    rows = registered_models.rows.head(n)
    ids = [str(i) for i in rows[s.CUSTOMER_ID]]
    records = [{s.CUSTOMER_ID: i, **r} for i, r in zip(ids, to_records(rows), strict=True)]
    return records, ids


def logged(server: RunningServer, request_id: str, n: int) -> pd.DataFrame:
    """The ``n`` log rows of ``request_id`` (read with the platform's reader). A file log is
    flushed on a later request once a second has passed: requests without ids nudge it
    until the rows are there (a count, not a timed window)."""
    deadline = time.monotonic() + 120  # a limit on a failure, not a tuned wait
    frame = pd.DataFrame()
    while time.monotonic() < deadline:
        frame = read_inference_log(server.inference_log, default_spec(), max_rows=100_000)
        if (frame["request_id"] == request_id).sum() >= n:
            return frame[frame["request_id"] == request_id].reset_index(drop=True)
        time.sleep(0.2)
        nudge = httpx.post(server.url + "/predict", json={"records": [NUDGE]})
        assert nudge.status_code == 200, nudge.text
    raise AssertionError(f"request {request_id} not in {server.inference_log}: {frame.tail()}")


# a valid record of the shipped spec, without an entity id
NUDGE: dict[str, Any] = {
    "signup_date": "2025-01-01",
    "tenure_months": 10,
    "monthly_spend": 50.0,
    "contract_type": "annual",
    "is_enterprise": False,
    "region": "north",
    "support_tickets": 1,
    "last_login_hour": 12,
}


def assert_logged(
    frame: pd.DataFrame, ids: list[str | None], probabilities: list[float], version: str = "1"
) -> None:
    """The rows of one request: its entity ids, probabilities, version, served time; the id
    is a column of its own, never left in the record's fields."""
    assert frame["entity_id"].tolist() == ids
    assert frame["probability"].tolist() == pytest.approx(probabilities)
    assert set(frame["model_version"].astype(str)) == {version}
    assert frame["ts"].notna().all()
    assert s.CUSTOMER_ID not in frame.columns
    assert set(default_spec().feature_names) <= set(frame.columns)


def test_predict_takes_echoes_and_logs_the_entity_and_request_ids(
    server: RunningServer, registered_models: RegisteredModels
) -> None:
    records, ids = with_ids(registered_models, 4)
    r = httpx.post(
        server.url + "/predict",
        json={"records": records},
        headers={"X-Request-Id": "order-42/predict"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] == "order-42/predict"
    assert body["request_id"] == "order-42/predict"
    assert body["entity_ids"] == ids
    # the id never reached the model: the probabilities are the model's on the features alone
    offline = registered_models.pipelines["1"].predict_proba(
        canonical(registered_models.rows.head(4))
    )[:, 1]
    assert body["probabilities"] == pytest.approx(offline.tolist())
    assert body["model_version"] == "1"
    assert_logged(logged(server, "order-42/predict", 4), ids, body["probabilities"])


def test_a_request_without_ids_gets_a_generated_request_id_and_null_entity_ids(
    server: RunningServer, registered_models: RegisteredModels
) -> None:
    records, ids = with_ids(registered_models, 2)
    records[1].pop(s.CUSTOMER_ID)  # one record with an id, one without
    r = httpx.post(server.url + "/predict", json={"records": records})
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    assert GENERATED.match(request_id) and r.json()["request_id"] == request_id
    assert r.json()["entity_ids"] == [ids[0], None]
    assert_logged(logged(server, request_id, 2), [ids[0], None], r.json()["probabilities"])
    bare = httpx.post(
        server.url + "/predict", json={"records": to_records(registered_models.rows.head(1))}
    )
    assert "entity_ids" not in bare.json() and GENERATED.match(bare.json()["request_id"])
    assert logged(server, bare.json()["request_id"], 1)["entity_id"].tolist() == [None]


def invocation_bodies(records: list[dict]) -> dict[str, tuple[Any, str]]:
    """The same records (entity id included) in MLflow's formats: (body, content type)."""
    columns = list(records[0])
    csv = pd.DataFrame(records, columns=columns).to_csv(index=False)
    return {
        "dataframe_split": (
            {"dataframe_split": {"columns": columns, "data": [list(r.values()) for r in records]}},
            "application/json",
        ),
        "dataframe_records": ({"dataframe_records": records}, "application/json"),
        "inputs": ({"inputs": records}, "application/json"),
        "csv": (csv, "text/csv"),
    }


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "inputs", "csv"])
def test_invocations_take_echo_and_log_the_ids_in_every_format(
    server: RunningServer, registered_models: RegisteredModels, fmt: str
) -> None:
    from mlflow.deployments import PredictionsResponse

    records, ids = with_ids(registered_models, 3)
    body, content_type = invocation_bodies(records)[fmt]
    request_id = f"inv-{fmt}"
    headers = {"content-type": content_type, "x-request-id": request_id}
    content = body if isinstance(body, str) else None
    r = httpx.post(
        server.url + "/invocations",
        content=content,
        json=None if content is not None else body,
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == request_id and r.headers["x-model-version"] == "1"
    answer = r.json()
    assert answer["request_id"] == request_id and answer["entity_ids"] == ids
    # an MLflow client still reads the predictions of this answer
    predictions = PredictionsResponse.from_json(r.text).get_predictions("ndarray")
    assert predictions.tolist() == pytest.approx(answer["predictions"])
    assert_logged(logged(server, request_id, 3), ids, answer["predictions"])


BAD_ENTITY_IDS = {
    "list": [1, 2],
    "object": {"id": 1},
    "float": 1.5,
    "bool": True,
    "empty": "",
    "too long": "C" * 257,
    "control character": "C1\n",
}


@pytest.mark.parametrize("value", BAD_ENTITY_IDS.values(), ids=BAD_ENTITY_IDS.keys())
def test_an_entity_id_that_is_no_scalar_id_is_a_4xx_naming_the_field(
    server: RunningServer, router: str, registered_models: RegisteredModels, value: Any
) -> None:
    records, _ = with_ids(registered_models, 2)
    records[1][s.CUSTOMER_ID] = value
    for url in (server.url, router):
        r = httpx.post(url + "/predict", json={"records": records})
        assert r.status_code == 422, r.text
        assert "records[1].customer_id" in r.json()["error"] and "entity id" in r.json()["error"]
        r = httpx.post(url + "/invocations", json={"dataframe_records": records})
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "BAD_REQUEST"
        assert "records[1].customer_id" in r.json()["message"]


def test_a_whole_number_entity_id_is_taken_as_its_string(
    server: RunningServer, registered_models: RegisteredModels
) -> None:
    records, _ = with_ids(registered_models, 1)
    records[0][s.CUSTOMER_ID] = 12345
    r = httpx.post(server.url + "/predict", json={"records": records})
    assert r.status_code == 200 and r.json()["entity_ids"] == ["12345"]
    assert logged(server, r.json()["request_id"], 1)["entity_id"].tolist() == ["12345"]


BAD_REQUEST_IDS = {"too long": "r" * 129, "control character": "a\tb", "non-ascii": "caf\xe9"}


@pytest.mark.parametrize("value", BAD_REQUEST_IDS.values(), ids=BAD_REQUEST_IDS.keys())
def test_a_bad_request_id_is_a_400_naming_the_header(
    server: RunningServer, router: str, registered_models: RegisteredModels, value: str
) -> None:
    records = to_records(registered_models.rows.head(1))
    headers = {"x-request-id": value.encode("latin-1")}
    for url in (server.url, router):
        r = httpx.post(url + "/predict", json={"records": records}, headers=headers)
        assert r.status_code == 400 and "X-Request-Id" in r.json()["error"], (url, r.text)
        r = httpx.post(url + "/invocations", json={"dataframe_records": records}, headers=headers)
        assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST", (url, r.text)
        assert "X-Request-Id" in r.json()["message"]


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_the_router_forwards_the_request_id_so_its_answer_and_the_server_log_agree(
    server: RunningServer, router: str, registered_models: RegisteredModels, path: str
) -> None:
    records, ids = with_ids(registered_models, 3)
    body = {"records": records} if path == "/predict" else {"dataframe_records": records}
    given = httpx.post(router + path, json=body, headers={"x-request-id": f"via-router{path}"})
    assert given.status_code == 200, given.text
    assert given.headers["x-request-id"] == f"via-router{path}"
    assert given.json()["request_id"] == f"via-router{path}"
    assert given.json()["entity_ids"] == ids
    scores = given.json()["probabilities" if path == "/predict" else "predictions"]
    assert_logged(logged(server, f"via-router{path}", 3), ids, scores)
    # without one, the router makes the id, and the server logs the request under it
    made = httpx.post(router + path, json=body)
    assert made.status_code == 200, made.text
    request_id = made.headers["x-request-id"]
    assert GENERATED.match(request_id) and made.json()["request_id"] == request_id
    assert logged(server, request_id, 3)["entity_id"].tolist() == ids


def test_the_routers_own_answers_carry_the_request_id(tmp_path: Path) -> None:
    with start_router(tmp_path / "router.json", {"CHURN_ROUTER_ADMIN_TOKEN": TOKEN}) as url:
        for path in ("/predict", "/invocations"):
            r = httpx.post(url + path, json={}, headers={"x-request-id": "no-traffic"})
            assert r.status_code == 503 and r.headers["x-request-id"] == "no-traffic"


def test_the_log_readers_and_the_drift_window_have_the_ids_and_the_drift_ignores_them(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    spec = default_spec()
    rows = registered_models.rows
    log = InferenceLog(tmp_path / "1.jsonl", "1", flush_records=100_000)
    records = to_records(rows)
    ids = [str(i) for i in rows[s.CUSTOMER_ID]]
    log.append(records, [0.5] * len(records), request_id="batch-1", entity_ids=ids)
    log.append(records[:2], [0.25, 0.75])  # a caller without ids: one generated request id
    log.flush()
    window = InferenceLogResource(log_dir=str(tmp_path)).window("1", spec)
    assert len(window) == len(records) + 2
    assert window["entity_id"].tolist() == [*ids, None, None]
    assert window["request_id"].iloc[: len(records)].eq("batch-1").all()
    assert window["request_id"].iloc[-2] == window["request_id"].iloc[-1] != "batch-1"
    profile = drift.build_reference_profile(canonical(rows), spec)
    results, skipped = judge_windows(profile, {"inference_log": window}, 100)
    assert skipped == []
    assert set(results["inference_log"].psi) == set(profile["features"])
    assert not {"entity_id", "request_id"} & set(results["inference_log"].psi)
