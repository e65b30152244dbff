"""Lenient where MLflow is lenient, counted everywhere (issue 25), through real processes.

One pipeline (one-hot with ``handle_unknown="ignore"``, as the platform's encoders) is
logged twice to a real MLflow store: version 1 without a spec section (the defaults:
unseen categories scored, undeclared fields ignored) and version 2 with the spec's
``serving:`` section set to refuse both. Real model-server processes on 127.0.0.1 answer;
their ``/metrics``, inference log and the drift PSI of that log are read back. The canary
runs on the local process target (a real router mirroring to the candidate) and stops a
candidate that refuses what the champion scores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from churn_platform.core import schema as s
from churn_platform.core.canary import CanaryConfig, CanaryState, Collaborators, Rollout, run_canary
from churn_platform.core.drift import UNSEEN_BIN, build_reference_profile, psi
from churn_platform.core.spec import MODEL_METADATA_KEY, default_spec, parse_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.metrics_source import ScrapeMetrics
from churn_platform.serving.inference_log import read_inference_log
from churn_platform.serving.model_server.leniency import MAX_IGNORED_NAMES, OTHER_FIELD
from churn_platform.settings import MODEL_NAME
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.testing import (
    PacedLoad,
    RegisteredModels,
    RunningServer,
    canonical,
    log_and_register,
    start_model_server,
    to_records,
    train_logistic,
)

pytestmark = pytest.mark.integration

STRICT = {"unseen_categories": "refuse", "unknown_fields": "refuse"}


@dataclass
class Models:
    """The store (v1 lenient, v2 strict) and the training rows (the drift reference)."""

    registered: RegisteredModels
    train: pd.DataFrame


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("lenient-mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    train = generate(SyntheticSpec(n_rows=3000, seed=11))
    pipeline = train_logistic(train, 1.0)
    strict = parse_spec({**default_spec().to_dict(), "serving": STRICT})
    lenient = log_and_register(pipeline, train, tracking_uri)
    refusing = log_and_register(
        pipeline, train, tracking_uri, metadata={MODEL_METADATA_KEY: strict.to_dict()}
    )
    assert (lenient, refusing) == ("1", "2")
    uris = {v: f"models:/{MODEL_NAME}/{v}" for v in (lenient, refusing)}
    rows = generate(SyntheticSpec(n_rows=300, seed=99, id_offset=10_000))
    registered = RegisteredModels(tracking_uri, root, uris, {"1": pipeline, "2": pipeline}, rows)
    return Models(registered, train)


@pytest.fixture(scope="module")
def lenient(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_model_server(models.registered, "1", tmp_path_factory.mktemp("lenient")) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_model_server(models.registered, "2", tmp_path_factory.mktemp("strict")) as srv:
        yield srv


def counter(url: str, name: str) -> dict[str, float]:
    """``name``'s samples on ``url``/metrics by their ``field`` label."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["field"]] = sample.value
    return out


def logged_lines(
    server: RunningServer, wanted: int, match: Callable[[dict], bool], record: dict[str, Any]
) -> list[dict]:
    """The log's lines once ``wanted`` of them ``match``: the buffer is flushed a second
    after its first line, on a later request, so ``record`` is sent again until they are
    there (a count, not a timed window)."""
    deadline = time.monotonic() + 120
    lines: list[dict] = []
    while time.monotonic() < deadline:
        if server.inference_log.exists():
            lines = [json.loads(x) for x in server.inference_log.read_text().splitlines()]
            if sum(1 for x in lines if match(x)) >= wanted:
                return lines
        assert httpx.post(server.url + "/predict", json={"records": [record]}).status_code == 200
        time.sleep(0.3)
    raise AssertionError(f"{len(lines)} log lines after 120 s, wanted {wanted} matching")


def plain_record(rows: pd.DataFrame) -> dict[str, Any]:
    """A record of ``rows``' first customer with a region training saw."""
    return {**to_records(rows.head(1))[0], s.REGION: "north"}


def test_an_unseen_category_is_scored_as_the_model_handles_it_and_counted(
    lenient: RunningServer, models: Models
) -> None:
    rows = models.registered.rows.head(40).copy()
    rows[s.REGION] = "central"  # a region launched after training
    records = to_records(rows)
    before = counter(lenient.url, "churn_model_unseen_values_total").get(s.REGION, 0.0)
    answer = httpx.post(lenient.url + "/predict", json={"records": records}, timeout=30)
    assert answer.status_code == 200, answer.text
    # the pipeline's own handling: one-hot of an unknown region is all zeros
    expected = models.registered.pipelines["1"].predict_proba(canonical(rows))[:, 1]
    np.testing.assert_allclose(answer.json()["probabilities"], expected, rtol=0, atol=1e-12)
    invoked = httpx.post(lenient.url + "/invocations", json={"dataframe_records": records[:1]})
    assert invoked.status_code == 200, invoked.text
    assert invoked.json()["predictions"] == pytest.approx(expected[:1], abs=1e-12)
    counts = counter(lenient.url, "churn_model_unseen_values_total")
    assert counts[s.REGION] == before + 41
    assert counts.get(s.CONTRACT_TYPE, 0.0) == 0.0  # per field: only the field that had one

    # logged as sent, with the field named on the line; the drift PSI sees the new region
    lines = logged_lines(lenient, 41, lambda x: x[s.REGION] == "central", plain_record(rows))
    unseen = [x for x in lines if x[s.REGION] == "central"]
    assert len(unseen) >= 41 and all(x["unseen_fields"] == [s.REGION] for x in unseen)
    assert all("unseen_fields" not in x for x in lines if x[s.REGION] != "central")
    spec = default_spec()
    assert s.REGION in spec.drift_features()
    profile = build_reference_profile(models.train, spec)
    assert UNSEEN_BIN in profile["features"][s.REGION]["bins"]
    drift = psi(profile, read_inference_log(lenient.inference_log, spec))
    assert drift.unseen_counts[s.REGION] >= 41
    assert drift.psi[s.REGION] > 1.0  # every served row in a bin training never filled


def test_an_undeclared_field_is_ignored_and_counted_with_bounded_labels(
    lenient: RunningServer, models: Models
) -> None:
    rows = models.registered.rows.head(3)
    plain = to_records(rows)
    extra = [{**r, "crm_segment": "gold", "Contract": "Month-to-month"} for r in plain]
    before = counter(lenient.url, "churn_model_ignored_fields_total")
    answer = httpx.post(lenient.url + "/predict", json={"records": extra})
    assert answer.status_code == 200, answer.text
    scored = httpx.post(lenient.url + "/predict", json={"records": plain}).json()
    assert answer.json()["probabilities"] == scored["probabilities"]
    after = counter(lenient.url, "churn_model_ignored_fields_total")
    assert after["crm_segment"] == before.get("crm_segment", 0.0) + 3
    assert after["Contract"] == before.get("Contract", 0.0) + 3
    lines = logged_lines(lenient, 3, lambda x: "ignored_fields" in x, plain[0])
    ignored = [x for x in lines if "ignored_fields" in x]
    assert ignored and all(x["ignored_fields"] == ["crm_segment", "Contract"] for x in ignored)
    assert not any("crm_segment" in x or "Contract" in x for x in lines)  # never logged
    # a client sending many distinct names: the first 50 are labels, the rest __other__
    many = {**plain[0], **{f"col_{i:03d}": i for i in range(MAX_IGNORED_NAMES + 10)}}
    assert httpx.post(lenient.url + "/predict", json={"records": [many]}).status_code == 200
    labels = counter(lenient.url, "churn_model_ignored_fields_total")
    assert len(labels) == MAX_IGNORED_NAMES + 1 and labels[OTHER_FIELD] >= 10


def test_a_strict_spec_refuses_both_naming_the_field(strict: RunningServer, models: Models) -> None:
    record = to_records(models.registered.rows.head(1))[0]
    r = httpx.post(strict.url + "/predict", json={"records": [{**record, s.REGION: "central"}]})
    assert r.status_code == 422
    assert "records[0].region is 'central'; send one of north, south, east, west" in r.text
    assert "serving.unseen_categories: refuse" in r.json()["error"]
    r = httpx.post(strict.url + "/predict", json={"records": [{**record, "crm_segment": "x"}]})
    assert r.status_code == 422
    assert "records[0] has unknown field(s) ['crm_segment']" in r.json()["error"]
    assert "serving.unknown_fields: refuse" in r.json()["error"]
    r = httpx.post(strict.url + "/invocations", json={"dataframe_records": [{**record, "x": 1}]})
    assert r.status_code == 400 and "unknown field(s) ['x']" in r.json()["message"]
    assert httpx.post(strict.url + "/predict", json={"records": [record]}).status_code == 200
    assert counter(strict.url, "churn_model_unseen_values_total") == {}
    assert counter(strict.url, "churn_model_ignored_fields_total") == {}


@pytest.mark.slow
def test_the_canary_stops_a_candidate_refusing_what_the_champion_scores(
    models: Models, tmp_path: Path
) -> None:
    """Clients send an extra column: the champion (lenient) scores it, the candidate
    (strict) answers every mirrored copy 422. Before issue 25 a 4xx never counted, so the
    candidate passed; now its 4xx share ends the release in shadow, no client affected."""
    registered = models.registered
    target = LocalProcessTarget(
        tmp_path / "deployments",
        registered.tracking_uri,
        inference_log_dir=tmp_path / "inference_log",
    )
    env = "lenient-canary"
    try:
        target.deploy(env, "1", registered.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        target.deploy(env, "2", registered.model_uris["2"])
        assert state.endpoint is not None
        records = [{**r, "crm_segment": "gold"} for r in to_records(registered.rows.head(200))]
        metrics = ScrapeMetrics(
            lambda: {v.version: v.url for v in target.state(env).versions},
            router_url=lambda: target.state(env).endpoint,
        )
        with PacedLoad(state.endpoint, records, rate=25.0, one_by_one=True) as load:
            result = run_canary(
                Collaborators(target, metrics), Rollout(env, "2", "1"), CanaryConfig()
            )
        assert result.status is CanaryState.ABORTED, result.as_markdown()
        assert result.reason.startswith("not promoting after the shadow: 4xx rate 100.00% over ")
        assert "> baseline 0.00% over " in result.reason
        assert all(t.weights.get("2", 0) == 0 for t in result.transitions)
        assert len(load.results) > 10 and {st for _, st, _ in load.results} == {200}
        assert target.state(env).weights() == {"1": 100, "2": 0}
    finally:
        target.stop_all()


def test_a_pipeline_that_raises_on_an_unseen_category_answers_a_4xx_naming_it(
    models: Models, tmp_path: Path
) -> None:
    """The platform's encoders all take an unknown value; a model whose encoder raises on
    one (``handle_unknown="error"``) cannot score it, and that is the client's 422 naming
    the field, not the server's 500."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from starlette.testclient import TestClient

    from churn_platform.serving.model_server.app import create_app
    from churn_platform.serving.model_server.schema import InputSchema
    from churn_platform.serving.server_settings import ServerSettings

    X = canonical(models.train)
    features = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="error"), [s.CONTRACT_TYPE, s.REGION]),
            ("numbers", "passthrough", list(s.NUMERIC_FEATURES)),
        ]
    )
    pipeline = Pipeline([("features", features), ("model", LogisticRegression(max_iter=2000))])
    pipeline.fit(X, models.train[s.TARGET].astype(int))
    schema = InputSchema.from_spec(default_spec()).in_model_order(pipeline)
    app = create_app(
        "models:/strict-encoder/1",
        "7",
        settings=ServerSettings(home=tmp_path),
        inference_log_path=tmp_path / "log.jsonl",
        model=pipeline,
        input_schema=schema,
    )
    record = to_records(models.registered.rows.head(1))[0]
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.post("/predict", json={"records": [record]}).status_code == 200
        r = client.post("/predict", json={"records": [{**record, s.REGION: "central"}]})
        assert r.status_code == 422, r.text
        assert "cannot score values outside the allowed list of ['region']" in r.json()["error"]
        assert "send an allowed value" in r.json()["error"]
