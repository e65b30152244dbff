"""The model server as a real process: health, parity with offline predictions, the input
contract (4xx naming the field, never a 500), Prometheus metrics and the inference log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from churn_platform.core.spec import default_spec
from churn_platform.resources.metrics_source import ScrapeMetrics
from churn_platform.serving.model_server.app import create_app
from churn_platform.serving.model_server.schema import InputSchema
from churn_platform.serving.server_settings import ServerSettings
from churn_platform.testing import (
    RegisteredModels,
    RunningServer,
    offline_probabilities,
    start_model_server,
    to_records,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    registered_models: RegisteredModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningServer]:
    with start_model_server(registered_models, "1", tmp_path_factory.mktemp("server")) as srv:
        yield srv


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics keyed by (name, sorted labels)."""
    text = httpx.get(url + "/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def count(url: str, status: str) -> float:
    key = (
        "http_requests_total",
        (("model_version", "1"), ("path", "/predict"), ("status", status)),
    )
    return samples(url).get(key, 0.0)


def test_health_says_ok_with_the_version(server: RunningServer) -> None:
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["model_version"] == "1"


def test_predictions_equal_offline_predict_proba(
    server: RunningServer,
    registered_models: RegisteredModels,
) -> None:
    rows = registered_models.rows
    r = httpx.post(server.url + "/predict", json={"records": to_records(rows)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1"
    expected = offline_probabilities(registered_models, "1", rows)
    np.testing.assert_allclose(body["probabilities"], expected, rtol=0, atol=1e-12)
    # a single record, sent as a bare list, gives the same number
    one = httpx.post(server.url + "/predict", json=to_records(rows.head(1)))
    assert one.status_code == 200
    assert one.json()["probabilities"] == pytest.approx([expected[0]], abs=1e-12)


BAD_INPUTS = [
    # (name, body builder, status, words the message must contain)
    (
        "missing column",
        lambda r: {"records": [{k: v for k, v in r.items() if k != "region"}]},
        422,
        ["region", "missing"],
    ),
    (
        "wrong type",
        lambda r: {"records": [{**r, "tenure_months": "twelve"}]},
        422,
        ["tenure_months", "whole number"],
    ),
    (
        "bool for number",
        lambda r: {"records": [{**r, "monthly_spend": True}]},
        422,
        ["monthly_spend", "number"],
    ),
    # an undeclared field and an unseen category are scored and counted (issue 25):
    # test_lenient_serving.py; a category longer than any real one is still refused
    (
        "bad date",
        lambda r: {"records": [{**r, "signup_date": "yesterday"}]},
        422,
        ["signup_date", "ISO date"],
    ),
    # issue 13.5: these two were 500s (OutOfBoundsDatetime, OverflowError)
    (
        "date past pandas' range",
        lambda r: {"records": [{**r, "signup_date": "9999-12-31"}]},
        422,
        ["records[0].signup_date", "'9999-12-31'", "outside the dates"],
    ),
    (
        "huge whole number",
        lambda r: {"records": [{**r, "tenure_months": 1e30}]},
        422,
        ["records[0].tenure_months", "outside the range"],
    ),
    (
        "huge number",
        lambda r: {"records": [{**r, "monthly_spend": -1e300}]},
        422,
        ["records[0].monthly_spend", "-1e+300", "outside the range"],
    ),
    # these two were 500s (OverflowError: an int beyond a float, year 1 minus an hour in UTC)
    (
        "whole number beyond a float",
        lambda r: {"records": [{**r, "monthly_spend": 10**400}]},
        422,
        ["records[0].monthly_spend", "outside the range"],
    ),
    (
        "date before year 1 in UTC",
        lambda r: {"records": [{**r, "signup_date": "0001-01-01T00:00:00+01:00"}]},
        422,
        ["records[0].signup_date", "outside the dates"],
    ),
    (
        "long bad string quoted by a prefix only",
        lambda r: {"records": [{**r, "region": "x" * 100_000}]},
        422,
        ["records[0].region", "... (100002 chars)", "longer than any category"],
    ),
    ("empty records", lambda r: {"records": []}, 422, ["empty", "tenure_months"]),
    ("records not a list", lambda r: {"records": r}, 422, ["records", "list"]),
    ("record not an object", lambda r: {"records": [[1, 2]]}, 422, ["records[0]", "object"]),
    ("wrong top-level field", lambda r: {"rows": [r]}, 400, ["records"]),
    ("scalar body", lambda r: 42, 400, ["records"]),
]


@pytest.mark.parametrize(
    ("build", "status", "words"),
    [pytest.param(b, s, w, id=n) for n, b, s, w in BAD_INPUTS],
)
def test_bad_input_is_a_4xx_naming_the_field(
    server: RunningServer,
    registered_models: RegisteredModels,
    build,
    status: int,
    words: list[str],
) -> None:
    record = to_records(registered_models.rows.head(1))[0]
    r = httpx.post(server.url + "/predict", json=build(record))
    assert r.status_code == status, r.text
    message = r.json()["error"]
    for word in words:
        assert word in message
    assert len(message) < 1000  # a huge bad value is not echoed back


def test_malformed_json_is_a_400_and_nothing_is_a_500(server: RunningServer) -> None:
    errors_before = count(server.url, "500")
    r = httpx.post(
        server.url + "/predict",
        content=b'{"records": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"] and "records" in r.json()["error"]
    assert count(server.url, "500") == errors_before == 0


def test_metrics_carry_status_and_version_labels(
    server: RunningServer,
    registered_models: RegisteredModels,
) -> None:
    ok_before, bad_before = count(server.url, "200"), count(server.url, "422")
    records = to_records(registered_models.rows.head(7))
    httpx.post(server.url + "/predict", json={"records": records})
    httpx.post(server.url + "/predict", json={"records": []})
    assert count(server.url, "200") == ok_before + 1
    assert count(server.url, "422") == bad_before + 1
    found = samples(server.url)
    latency = [k for k in found if k[0] == "http_request_duration_seconds_count"]
    assert latency and dict(latency[0][1])["model_version"] == "1"
    score_count = found[("churn_prediction_score_count", (("model_version", "1"),))]
    records_total = found[("churn_scored_records_total", (("model_version", "1"),))]
    assert score_count == records_total >= 7
    # health checks and scrapes are not counted as traffic
    assert not [k for k in found if k[0] == "http_requests_total" and "/health" in str(k)]


def test_scored_records_reach_the_inference_log(
    server: RunningServer,
    registered_models: RegisteredModels,
) -> None:
    records = to_records(registered_models.rows.head(5))
    httpx.post(server.url + "/predict", json={"records": records})
    time.sleep(1.2)  # the buffer is flushed at most a second later, on the next request
    r = httpx.post(server.url + "/predict", json={"records": records[:1]})
    assert r.status_code == 200
    lines = [json.loads(x) for x in server.inference_log.read_text().splitlines()]
    assert len(lines) >= 6
    last = lines[-1]
    assert last["model_version"] == "1"
    assert last["probability"] == pytest.approx(r.json()["probabilities"][0])
    assert {k: last[k] for k in records[0]} == records[0]


def test_health_is_503_with_the_error_when_the_model_cannot_load(tmp_path: Path) -> None:
    app = create_app(
        "models:/no_such_model/1",
        "9",
        settings=ServerSettings(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}"),
        inference_log_path=tmp_path / "log.jsonl",
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while True:
            r = client.get("/health")
            if r.json()["status"] != "loading" or time.monotonic() > deadline:
                break
            assert r.status_code == 503
            time.sleep(0.1)
        assert r.status_code == 503
        assert r.json()["status"] == "failed" and "no_such_model" in r.json()["error"]
        p = client.post("/predict", json={"records": [{}]})
        assert p.status_code == 503 and "no_such_model" in p.json()["error"]


def test_input_schema_from_signature_keeps_canonical_dtypes(
    registered_models: RegisteredModels,
) -> None:
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(registered_models.tracking_uri)
    signature = get_model_info(registered_models.model_uris["1"]).signature
    schema = InputSchema.from_signature(signature, default_spec())
    frame = schema.frame(to_records(registered_models.rows.head(3)))
    assert str(frame["tenure_months"].dtype) == "Int64"
    assert str(frame["signup_date"].dtype) == "datetime64[ns]"
    assert str(frame["region"].dtype) == "string"


def test_concurrent_requests_each_get_their_own_rows_scored(
    server: RunningServer,
    registered_models: RegisteredModels,
) -> None:
    """Requests scored together in one model call must not get each other's answers."""
    rows = registered_models.rows
    expected = offline_probabilities(registered_models, "1", rows)
    records = to_records(rows)
    sizes = [1, 3, 1, 7, 2, 1, 5, 1] * 5
    starts = np.cumsum([0, *sizes[:-1]]) % (len(records) - 10)

    def ask(i: int) -> tuple[int, list[float]]:
        chunk = records[starts[i] : starts[i] + sizes[i]]
        r = httpx.post(server.url + "/predict", json={"records": chunk}, timeout=30)
        assert r.status_code == 200, r.text
        return i, r.json()["probabilities"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(len(sizes))))
    for i, probabilities in answers:
        want = expected[starts[i] : starts[i] + sizes[i]]
        np.testing.assert_allclose(probabilities, want, rtol=0, atol=1e-12)


def test_missing_value_the_model_cannot_impute_is_a_422(
    server: RunningServer,
    registered_models: RegisteredModels,
) -> None:
    # the fixture's logistic regression has no imputer; the shipped training pipeline has one
    record = to_records(registered_models.rows.head(1))[0]
    r = httpx.post(server.url + "/predict", json={"records": [{**record, "monthly_spend": None}]})
    assert r.status_code == 422, r.text
    assert "monthly_spend" in r.json()["error"] and "missing values" in r.json()["error"]


def test_client_mistakes_are_not_the_servers_errors_in_the_canary_reading(
    server: RunningServer,
    registered_models: RegisteredModels,  # noqa: F811
) -> None:
    # issue 13.5: three clients sending far-future dates rolled back a healthy candidate
    metrics = ScrapeMetrics({server.version: server.url})
    metrics.error_rate(server.version, 0)  # the base scrape
    record = to_records(registered_models.rows.head(1))[0]
    for bad in ({"signup_date": "9999-12-31"}, {"tenure_months": 1e30}):
        r = httpx.post(server.url + "/predict", json={"records": [{**record, **bad}]})
        assert r.status_code == 422, r.text
    reading = metrics.error_rate(server.version, 0)
    assert (reading.error_rate, reading.request_count) == (0.0, 2.0), reading


def test_the_cli_reads_the_serving_variables_once_into_server_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OMP_NUM_THREADS", "PROMETHEUS_DISABLE_CREATED_SERIES"):
        monkeypatch.delenv(var, raising=False)  # set by the import below; restored after
    from churn_platform.serving.__main__ import server_settings

    env = {
        "CHURN_HOME": str(tmp_path),
        "CHURN_FAULT_RATE": "0.25",
        "CHURN_FAULT_SEED": "7",
        "CHURN_MAX_BODY_BYTES": "2048",
        "CHURN_ROUTER_ADMIN_TOKEN": "secret",
        "CHURN_INFERENCE_LOG": str(tmp_path / "log.jsonl"),
    }
    read = server_settings(env)
    assert (read.fault_rate, read.fault_seed, read.max_body_bytes) == (0.25, 7, 2048)
    assert read.router_admin_token == "secret" and read.tracking_uri is None
    assert read.inference_log == tmp_path / "log.jsonl"
    assert read.storage_root() == tmp_path and not read.storage_is_remote
    assert server_settings({}).fault_rate == ServerSettings().fault_rate
    # a bad storage URL fails where the storage is used, so a router keeps routing
    bad = server_settings({**env, "CHURN_STORAGE_URL": "ftp://host/x"})
    with pytest.raises(ValueError, match="CHURN_STORAGE_URL"):
        bad.storage_root()


def test_a_value_outside_the_specs_range_is_scored_and_counted(
    server: RunningServer,
    registered_models: RegisteredModels,
) -> None:
    """``last_login_hour: 99`` is outside the spec's range: the model still answers, and the
    server counts it per field (it used to score it silently)."""
    key = (
        "churn_out_of_range_values_total",
        (("field", "last_login_hour"), ("model_version", "1")),
    )
    before = samples(server.url).get(key, 0.0)
    records = to_records(registered_models.rows.head(2))
    records[0]["last_login_hour"] = 99
    answer = httpx.post(server.url + "/predict", json={"records": records})
    assert answer.status_code == 200 and len(answer.json()["probabilities"]) == 2
    assert samples(server.url).get(key, 0.0) == before + 1
