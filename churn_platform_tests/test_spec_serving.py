"""A model server takes the columns of the spec its model was logged with, not the current one.

A small pipeline is trained on a table of another shape (plan, usage, is_annual, seats: no
date, no hour), logged with ``metadata={"churn_spec": spec.to_dict()}`` to a real MLflow
store and served by the real model-server process on 127.0.0.1. ``/predict``,
``/invocations`` (JSON and CSV), the staging integration checks and the inference log all
follow that spec; a model logged without a spec keeps the default spec's columns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, default_spec, parse_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.serving import integration
from churn_platform.serving.inference_log import read_inference_log
from churn_platform.serving.model_server.loading import load_model, model_spec
from churn_platform.serving.model_server.schema import InputError, InputSchema
from churn_platform.settings import MODEL_NAME
from churn_platform.testing import (
    RegisteredModels,
    RunningServer,
    register_verified,
    start_model_server,
)

pytestmark = pytest.mark.integration

SEATS_SPEC = """
version: 1
name: seats
entity_id:
  column: account
target:
  column: left
  positive: ["yes"]
  negative: ["no"]
features:
  plan:
    kind: categorical
    allowed: [basic, pro, team]
    encoding: [onehot]
  usage:
    kind: numeric
    range: [0, null]
  is_annual:
    kind: boolean
  seats:
    kind: integer
    range: [1, 500]
"""


def seats_table(n: int, seed: int) -> pd.DataFrame:
    """Rows of the seats spec with a known mechanism: low usage on a monthly basic plan churns."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], n, p=[0.5, 0.3, 0.2])
    usage = rng.gamma(2.0, 10.0, n).round(2)
    is_annual = rng.random(n) < 0.4
    seats = rng.integers(1, 200, n)
    logit = 1.0 - 0.08 * usage - 1.5 * is_annual + 0.8 * (plan == "basic") - 0.002 * seats
    left = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "account": [f"a{seed}-{i}" for i in range(n)],
            "plan": pd.array(plan, dtype="string"),
            "usage": usage.astype("float64"),
            "is_annual": pd.array(is_annual, dtype="boolean"),
            "seats": pd.array(seats, dtype="Int64"),
            "left": pd.array(left, dtype="Int64"),
        }
    )


def model_frame(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """What the server hands the model: the spec's features with the spec's dtypes."""
    return frame[list(spec.feature_names)].astype({n: spec.dtypes[n] for n in spec.feature_names})


def train(X: pd.DataFrame, y: np.ndarray) -> Any:
    """One-hot plan + the other three as numbers + logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    features = ColumnTransformer(
        [
            ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            ("numbers", "passthrough", ["usage", "is_annual", "seats"]),
        ]
    )
    pipeline = Pipeline([("features", features), ("model", LogisticRegression(max_iter=2000))])
    return pipeline.fit(X, y)


def log_model(pipeline: Any, X: pd.DataFrame, tracking_uri: str, root: Path, spec: Spec) -> str:
    """Log and register ``pipeline`` carrying ``spec`` in its MLmodel metadata."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("spec-serving", str(root / "artifacts"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=infer_signature(X, pipeline.predict_proba(X)[:, 1]),
                metadata={MODEL_METADATA_KEY: spec.to_dict()},
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "pandas"],
            )
        return register_verified(info.model_uri, MODEL_NAME, tracking_uri)
    finally:
        mlflow.set_tracking_uri(previous)


def to_records(frame: pd.DataFrame, spec: Spec) -> list[dict[str, Any]]:
    return json.loads(frame[list(spec.feature_names)].to_json(orient="records"))


@pytest.fixture(scope="module")
def spec() -> Spec:
    return parse_spec(SEATS_SPEC, where="seats.yaml")


@pytest.fixture(scope="module")
def seats_model(tmp_path_factory: pytest.TempPathFactory, spec: Spec) -> RegisteredModels:
    root = tmp_path_factory.mktemp("seats-mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    table = seats_table(2000, seed=3)
    X = model_frame(table, spec)
    pipeline = train(X, table["left"].astype(int).to_numpy())
    version = log_model(pipeline, X.head(200), tracking_uri, root, spec)
    rows = seats_table(60, seed=4)
    return RegisteredModels(
        tracking_uri,
        root,
        {version: f"models:/{MODEL_NAME}/{version}"},
        {version: pipeline},
        rows,
    )


@pytest.fixture(scope="module")
def server(
    seats_model: RegisteredModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    (version,) = seats_model.model_uris
    # the current spec is the shipped default: the server must not read it
    env = {"CHURN_SPEC": ""}
    with start_model_server(
        seats_model, version, tmp_path_factory.mktemp("seats-server"), env
    ) as srv:
        yield srv


def offline(seats_model: RegisteredModels, spec: Spec, frame: pd.DataFrame) -> np.ndarray:
    (pipeline,) = seats_model.pipelines.values()
    return pipeline.predict_proba(model_frame(frame, spec))[:, 1]


def test_the_logged_model_carries_its_spec(seats_model: RegisteredModels, spec: Spec) -> None:
    (uri,) = seats_model.model_uris.values()
    logged = model_spec(uri, seats_model.tracking_uri)
    assert logged.hash == spec.hash
    assert logged.hash != default_spec().hash
    _, schema = load_model(uri, seats_model.tracking_uri)
    assert [c.name for c in schema.columns] == ["plan", "usage", "is_annual", "seats"]
    assert [c.dtype for c in schema.columns] == ["string", "float64", "boolean", "Int64"]
    assert schema.by_name["plan"].categories == ("basic", "pro", "team")
    assert schema.spec is not None and schema.spec.hash == spec.hash


def test_health_names_the_models_spec_and_inputs(server: RunningServer, spec: Spec) -> None:
    body = httpx.get(server.url + "/health").json()
    assert body["status"] == "ok"
    assert body["spec_hash"] == spec.short_hash
    assert body["inputs"] == list(spec.feature_names)


def test_predict_answers_with_the_models_columns(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    rows = seats_model.rows
    r = httpx.post(server.url + "/predict", json={"records": to_records(rows, spec)}, timeout=30)
    assert r.status_code == 200, r.text
    online = np.asarray(r.json()["probabilities"])
    np.testing.assert_allclose(online, offline(seats_model, spec, rows), rtol=0, atol=1e-12)
    assert len(set(online.round(6))) > 10  # the model really uses its inputs


def test_predict_refuses_a_missing_column_by_name(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    record = to_records(seats_model.rows.head(1), spec)[0]
    del record["seats"]
    r = httpx.post(server.url + "/predict", json={"records": [record]})
    assert r.status_code == 422
    assert "missing field(s) seats" in r.json()["error"]


def test_predict_ignores_the_default_specs_columns_and_needs_its_own(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    record = to_records(seats_model.rows.head(1), spec)[0]
    plain = httpx.post(server.url + "/predict", json={"records": [record]})
    r = httpx.post(server.url + "/predict", json={"records": [{**record, "tenure_months": 3}]})
    assert r.status_code == 200, r.text  # ignored, as MLflow does (and counted)
    assert r.json()["probabilities"] == plain.json()["probabilities"]
    del record["seats"]
    r = httpx.post(server.url + "/predict", json={"records": [{**record, "tenure_months": 3}]})
    assert r.status_code == 422 and "missing field(s) seats" in r.json()["error"]


def test_predict_scores_a_plan_outside_the_specs_allowed_values(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    rows = seats_model.rows.head(1).assign(plan="enterprise")
    record = to_records(rows, spec)[0]
    r = httpx.post(server.url + "/predict", json={"records": [record]})
    assert r.status_code == 200, r.text  # the model's one-hot ignores an unknown plan
    assert r.json()["probabilities"] == pytest.approx(offline(seats_model, spec, rows), abs=1e-12)
    # "yes" is how a source holds a flag: the spec's mapping reads it (raw records, issue 25);
    # text no reading turns into a boolean is still refused, naming the field
    record = {**to_records(seats_model.rows.head(1), spec)[0], "is_annual": "maybe"}
    r = httpx.post(server.url + "/predict", json={"records": [record]})
    assert r.status_code == 422 and "records[0].is_annual must be true or false" in r.text
    canonical = to_records(seats_model.rows.head(1), spec)[0]
    scored = [
        httpx.post(server.url + "/predict", json={"records": [{**canonical, "is_annual": v}]})
        for v in (True, "yes")
    ]
    assert [r.status_code for r in scored] == [200, 200], [r.text for r in scored]
    assert scored[0].json()["probabilities"] == scored[1].json()["probabilities"]


def test_invocations_dataframe_split_and_csv_give_the_same_numbers(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    rows = seats_model.rows
    records = to_records(rows, spec)
    predicted = httpx.post(server.url + "/predict", json={"records": records}, timeout=30)
    expected = predicted.json()["probabilities"]
    columns = list(spec.feature_names)
    split = {"columns": columns, "data": [[r[c] for c in columns] for r in records]}
    r = httpx.post(server.url + "/invocations", json={"dataframe_split": split}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected
    csv = rows[columns].to_csv(index=False)
    r = httpx.post(
        server.url + "/invocations",
        content=csv.encode(),
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected, rtol=0, atol=1e-12)


def test_invocations_refuse_a_missing_column_by_name(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    columns = ["plan", "usage", "is_annual"]
    records = to_records(seats_model.rows.head(2), spec)
    split = {"columns": columns, "data": [[r[c] for c in columns] for r in records]}
    r = httpx.post(server.url + "/invocations", json={"dataframe_split": split})
    assert r.status_code == 400
    assert r.json()["error_code"] == "BAD_REQUEST"
    assert "missing field(s) seats" in r.json()["message"]
    bad = httpx.post(server.url + "/invocations", json=[{"plan": "pro"}])
    assert bad.status_code == 400
    assert '"columns": ["usage", ...]' in bad.json()["message"]  # its own column as example


def test_integration_checks_follow_the_served_models_spec(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    rows = seats_model.rows
    contract = integration.api_contract_check(server.url, rows, spec=spec)
    assert contract.passed, contract.description
    assert integration.dropped_column(spec) == "usage"
    parity = integration.parity_check(server.url, rows, offline(seats_model, spec, rows), spec=spec)
    assert parity.passed, parity.description
    latency = integration.latency_check(server.url, rows, requests=5, p95_bound_ms=1e9, spec=spec)
    assert latency.passed, latency.description
    # requests of the default spec (what the current spec would send) are refused
    default_rows = generate(SyntheticSpec(n_rows=5, seed=1))
    wrong = integration.api_contract_check(server.url, default_rows, spec=default_spec())
    assert not wrong.passed and "valid request answered 422" in wrong.description
    assert "missing field(s)" in wrong.description


def test_the_inference_log_holds_the_specs_columns(
    server: RunningServer, seats_model: RegisteredModels, spec: Spec
) -> None:
    records = to_records(seats_model.rows.head(3), spec)
    deadline = time.monotonic() + 120
    frame = pd.DataFrame()
    # the log is flushed a second after the first buffered line, on a later request: ask
    # until the lines are there (a count of lines, not a timed window)
    while time.monotonic() < deadline:
        assert httpx.post(server.url + "/predict", json={"records": records}).status_code == 200
        frame = read_inference_log(server.inference_log, spec)
        if len(frame) >= 3:
            break
        time.sleep(0.2)
    assert len(frame) >= 3
    assert set(spec.feature_names) <= set(frame.columns)
    assert not {"signup_date", "tenure_months", "region"} & set(frame.columns)
    # an ignored field (tenure_months, sent above) is never logged; an unseen plan is, named
    assert set(frame["plan"]) <= {"basic", "pro", "team", "enterprise"}
    unseen = frame[frame["plan"] == "enterprise"]
    assert all(fields == ["plan"] for fields in unseen.get("unseen_fields", []))
    empty = read_inference_log(server.inference_log.with_name("none"), spec)
    assert list(empty.columns) == [*spec.feature_names, "entity_id", "request_id"]


def test_input_schema_from_spec_takes_any_spec(spec: Spec) -> None:
    schema = InputSchema.from_spec(spec)
    frame = schema.frame([{"plan": "pro", "usage": 2, "is_annual": False, "seats": 4.0}])
    assert frame.dtypes.astype(str).to_dict() == {
        "plan": "string",
        "usage": "float64",
        "is_annual": "boolean",
        "seats": "Int64",
    }
    with pytest.raises(InputError, match=r"records\[0\] is missing field\(s\) seats \(a whole"):
        schema.check([{"plan": "pro", "usage": 2, "is_annual": False}])
    assert schema.example() == '{"records": [{"usage": 3.5, ...}]}'
    default = InputSchema.from_spec(default_spec())
    assert [c.name for c in default.columns] == list(default_spec().feature_names)


def test_a_model_logged_without_a_spec_serves_the_default_columns(
    registered_models: RegisteredModels,
) -> None:
    _, schema = load_model(registered_models.model_uris["1"], registered_models.tracking_uri)
    assert [c.name for c in schema.columns] == list(default_spec().feature_names)
    logged = model_spec(registered_models.model_uris["1"], registered_models.tracking_uri)
    assert logged.hash == default_spec().hash


def test_columns_follow_the_order_the_pipeline_was_fitted_in(
    seats_model: RegisteredModels, spec: Spec
) -> None:
    """MLflow writes MLmodel metadata with sorted keys, so a logged spec's features come back
    sorted by name; scikit-learn refuses columns in another order than at fit time."""
    (pipeline,) = seats_model.pipelines.values()
    shuffled = InputSchema(list(reversed(InputSchema.from_spec(spec).columns)), spec)
    ordered = shuffled.in_model_order(pipeline)
    assert [c.name for c in ordered.columns] == list(spec.feature_names)
    frame = ordered.frame(to_records(seats_model.rows.head(2), spec))
    assert pipeline.predict_proba(frame).shape == (2, 2)
    with pytest.raises(
        ValueError,
        match=r"fitted on column\(s\) \['plan', 'usage', 'is_annual', 'seats'\] that its spec 'churn'",
    ):
        InputSchema.from_spec(default_spec()).in_model_order(pipeline)
    # a column the model was not fitted on (a column transformer ignores it) goes last
    wider = InputSchema(
        [*shuffled.columns, InputSchema.from_spec(default_spec()).by_name["region"]], spec
    )
    names = [c.name for c in wider.in_model_order(pipeline).columns]
    assert names == [*spec.feature_names, "region"]
