"""Records as the source holds them score through every door of the served model (issue 25).

A table shaped like the public IBM Telco churn export (``testing.telco_table``: CamelCase
columns, ``Yes``/``No`` flags, ``0``/``1`` flags, labels such as ``Month-to-month``, numbers
as text, a blank ``TotalCharges``) is written to a CSV file, mapped by its spec
(``testing.TELCO_SPEC``) as the snapshot step does, trained on with the platform's trainer,
logged and registered through ``MlflowRegistry.log_and_register`` and served by the real
model-server process. Rows read back from the file as text give the probabilities of the
pipeline on the mapped frame through ``/predict`` and ``/invocations`` (JSON and CSV), and
canonical records keep giving them; so does the registered pyfunc.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from churn_platform.core import training
from churn_platform.core.mapping import apply_mapping
from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, parse_spec
from churn_platform.core.spec_starter import infer_spec_text
from churn_platform.resources import churn_flavor
from churn_platform.resources.mlflow_registry import MlflowRegistry, _fluent_store
from churn_platform.serving.model_server.raw_records import RecordMapper
from churn_platform.serving.model_server.schema import InputError, InputSchema
from churn_platform.testing import (
    TELCO_SPEC,
    RegisteredModels,
    RunningServer,
    second_table,
    start_model_server,
    start_router,
    telco_table,
)

pytestmark = pytest.mark.integration

SCORED_ROWS = 40


@pytest.fixture(scope="module")
def spec() -> Spec:
    return parse_spec(TELCO_SPEC, where="telco.yaml")


@pytest.fixture(scope="module")
def telco(tmp_path_factory: pytest.TempPathFactory, spec: Spec) -> dict[str, Any]:
    """The CSV file, its rows as text, the mapped frame and the registered model."""
    root = tmp_path_factory.mktemp("telco")
    data = root / "telco.csv"
    telco_table(n_rows=3_000, seed=3).to_csv(data, index=False)
    text = pd.read_csv(data, dtype=str, keep_default_na=False)  # as the source holds it
    mapped = apply_mapping(text, spec=spec).frame
    fitted = training.train(mapped, training.TrainingConfig(max_iter=60), spec).pipeline
    uri = f"sqlite:///{root / 'mlflow.db'}"
    registry = MlflowRegistry(tracking_uri=uri, artifact_location=(root / "art").as_uri())
    registered = registry.log_and_register(
        fitted,
        spec=spec,
        input_example=training.model_inputs(mapped, spec),
        params={},
        metrics={},
        tags={},
        json_artifacts={},
        run_name="telco",
    )
    version = registered.version
    models = RegisteredModels(uri, root, {version: registered.model_uri}, {version: fitted}, text)
    return {"data": data, "text": text, "mapped": mapped, "models": models, "version": version}


@pytest.fixture(scope="module")
def server(
    telco: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("telco-server")
    with start_model_server(telco["models"], telco["version"], workdir) as running:
        yield running


def scored_rows(telco: dict[str, Any]) -> pd.DataFrame:
    """The first rows of the file, with every blank ``TotalCharges`` row among the first 3000."""
    text: pd.DataFrame = telco["text"]
    blank = text.index[text["TotalCharges"].str.strip() == ""][:3]
    picked = sorted(set(range(SCORED_ROWS)) | set(blank))
    return text.loc[picked]


def expected(telco: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """The pipeline on the mapped frame: what the snapshot step would hand it."""
    pipeline = next(iter(telco["models"].pipelines.values()))
    return training.predict_proba(pipeline, telco["mapped"].loc[rows.index])


def raw_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as a client holding the file sends them: its names, its text, no label."""
    return rows.drop(columns=["Churn"]).to_dict("records")


def test_raw_rows_score_through_predict(server: RunningServer, telco: dict[str, Any]) -> None:
    rows = scored_rows(telco)
    assert (rows["TotalCharges"].str.strip() == "").any()  # a blank numeric cell is in there
    r = httpx.post(server.url + "/predict", json={"records": raw_records(rows)}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["probabilities"], expected(telco, rows), rtol=0, atol=1e-12)
    assert body["entity_ids"] == list(rows["customerID"])  # customerID is the spec's id source


def test_canonical_records_keep_working(
    server: RunningServer, telco: dict[str, Any], spec: Spec
) -> None:
    rows = scored_rows(telco)
    frame = telco["mapped"].loc[rows.index, list(spec.feature_names)]
    records = json.loads(frame.to_json(orient="records"))
    r = httpx.post(server.url + "/predict", json={"records": records}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], expected(telco, rows), rtol=0, atol=1e-12)
    # one request mixing a raw and a canonical record: each is read in its own form
    mixed = [raw_records(rows.head(1))[0], records[1]]
    r = httpx.post(server.url + "/predict", json={"records": mixed}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], expected(telco, rows)[:2], atol=1e-12)


def test_raw_rows_score_through_invocations_json_and_csv(
    server: RunningServer, telco: dict[str, Any]
) -> None:
    rows = scored_rows(telco)
    want = expected(telco, rows)
    split = rows.drop(columns=["Churn"])
    body = {"dataframe_split": {"columns": list(split.columns), "data": split.values.tolist()}}
    r = httpx.post(server.url + "/invocations", json=body, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], want, rtol=0, atol=1e-12)
    # the file's own lines (header and rows, label column left out), as text/csv
    lines = pd.read_csv(telco["data"], dtype=str, keep_default_na=False).loc[rows.index]
    out = io.StringIO()
    lines.drop(columns=["Churn"]).to_csv(out, index=False)
    r = httpx.post(
        server.url + "/invocations",
        content=out.getvalue().encode(),
        headers={"Content-Type": "text/csv"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], want, rtol=0, atol=1e-12)


def test_the_inference_log_holds_mapped_values(
    server: RunningServer, telco: dict[str, Any]
) -> None:
    """The log keeps what the model scored (feature names, mapped values): what drift reads."""
    rows = scored_rows(telco).head(3)
    request_id = "raw-records-log-check"
    contract = {"Month-to-month": "monthly", "One year": "annual", "Two year": "two_year"}
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    # the log is flushed a second after the first buffered line, on a later request: ask
    # until the lines are there (a count of lines, not a timed window)
    while time.monotonic() < deadline:
        r = httpx.post(
            server.url + "/predict",
            json={"records": raw_records(rows)},
            headers={"X-Request-Id": request_id},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        text = server.inference_log.read_text() if server.inference_log.exists() else ""
        lines = [json.loads(x) for x in text.splitlines() if request_id in x]
        if len(lines) >= 3:
            break
        time.sleep(0.2)
    assert len(lines) >= 3
    first = lines[:3]
    assert [line["contract"] for line in first] == [contract[c] for c in rows["Contract"]]
    assert all("Contract" not in line and "customerID" not in line for line in first)


def test_an_unreadable_raw_value_is_refused_naming_the_field(
    server: RunningServer, telco: dict[str, Any]
) -> None:
    record = {**raw_records(scored_rows(telco).head(1))[0], "tenure": "twelve"}
    r = httpx.post(server.url + "/predict", json={"records": [record]}, timeout=60)
    assert r.status_code == 422
    assert "tenure_months" in r.json()["error"] and "'twelve'" in r.json()["error"]
    both = {**raw_records(scored_rows(telco).head(1))[0], "contract": "monthly"}
    r = httpx.post(server.url + "/predict", json={"records": [both]}, timeout=60)
    assert r.status_code == 422
    assert "'Contract' and 'contract'" in r.json()["error"]


AMBIGUOUS_SPEC = """
version: 1
name: ambiguous
entity_id: {column: id}
target: {column: y, positive: [1], negative: [0]}
features:
  a: {kind: integer, source: b}
  b: {kind: categorical, source: c, allowed: [x, z], values: {"X": x}}
"""


def test_a_name_that_is_both_source_and_feature_follows_the_records_form() -> None:
    """``b`` is feature b's name and feature a's source: a record with ``c`` (a source name
    only) is raw and reads ``b`` as a; without it ``b`` is the feature b."""
    spec = parse_spec(AMBIGUOUS_SPEC, where="ambiguous.yaml")
    mapper = RecordMapper.for_schema(InputSchema.from_spec(spec))
    assert mapper is not None
    canonical = {"a": 3, "b": "z"}
    assert mapper.canonical([canonical])[0] is canonical
    assert mapper.canonical([{"b": "7", "c": "X"}]) == [{"a": 7, "b": "x"}]
    assert mapper.canonical([{"a": " 4 ", "b": ""}]) == [{"a": 4, "b": None}]
    with pytest.raises(InputError, match=r"both 'b' and 'a'"):
        mapper.canonical([{"c": "X", "b": "1", "a": 2}])
    # remembered cells map as the first time; an unreadable one stays for the check to name
    for _ in range(2):
        assert mapper.canonical([{"b": "7", "c": "X"}, {"a": "seven"}]) == [
            {"a": 7, "b": "x"},
            {"a": "seven"},
        ]


def test_raw_rows_score_through_the_pyfunc(telco: dict[str, Any], spec: Spec) -> None:
    """``mlflow.pyfunc.load_model(...).predict``: the file's rows as text, as pandas types
    them by default, and the canonical frame all give the pipeline's numbers."""
    import mlflow.pyfunc

    models: RegisteredModels = telco["models"]
    with _fluent_store(models.tracking_uri):
        model = mlflow.pyfunc.load_model(models.model_uris[telco["version"]])
    rows = scored_rows(telco)
    want = expected(telco, rows)
    as_text = rows.drop(columns=["Churn"])
    np.testing.assert_allclose(model.predict(as_text), want, rtol=0, atol=1e-12)
    typed = pd.read_csv(telco["data"]).loc[rows.index].drop(columns=["Churn"])
    assert typed["tenure"].dtype == "int64"  # pandas' own reading of the file
    np.testing.assert_allclose(model.predict(typed), want, rtol=0, atol=1e-12)
    canonical = telco["mapped"].loc[rows.index, list(spec.feature_names)]
    np.testing.assert_allclose(model.predict(canonical), want, rtol=0, atol=1e-12)
    inputs = model.metadata.get_input_schema().inputs
    assert [c.name for c in inputs][: len(spec.feature_names)] == list(spec.feature_names)
    assert {c.name for c in inputs} - set(spec.feature_names) == {
        "customerID",
        "SeniorCitizen",
        "Partner",
        "tenure",
        "InternetService",
        "Contract",
        "PaperlessBilling",
        "PaymentMethod",
        "MonthlyCharges",
        "TotalCharges",
    }
    assert churn_flavor.SPEC_METADATA_KEY == MODEL_METADATA_KEY


def test_raw_rows_score_through_a_router(
    server: RunningServer, telco: dict[str, Any], tmp_path: Path
) -> None:
    """A router forwards the body as it came: the server behind it maps the raw rows."""
    rows = scored_rows(telco)
    token = "raw-records-admin"
    state = tmp_path / "router.json"
    with start_router(state, {"CHURN_ROUTER_ADMIN_TOKEN": token}) as url:
        weights = {"backends": {telco["version"]: {"url": server.url, "weight": 100}}}
        auth = {"authorization": f"Bearer {token}"}
        httpx.put(url + "/-/weights", headers=auth, json=weights, timeout=30).raise_for_status()
        r = httpx.post(url + "/predict", json={"records": raw_records(rows)}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probabilities"], expected(telco, rows), atol=1e-12)
        out = io.StringIO()
        rows.drop(columns=["Churn"]).to_csv(out, index=False)
        csv = {"Content-Type": "text/csv"}
        r = httpx.post(url + "/invocations", content=out.getvalue(), headers=csv, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected(telco, rows), atol=1e-12)


def other_spec() -> Spec:
    """The Telco spec as a later version might read it: ``Contract`` feeds ``term``, with
    other labels. (Both read the same source columns: a column a spec does not read is an
    undeclared field, refused or ignored by the schema check, not by the mapping.)"""
    text = (
        TELCO_SPEC.replace("  contract:\n", "  term:\n")
        .replace(
            '{"Month-to-month": monthly, "One year": annual, "Two year": two_year}',
            '{"Month-to-month": m1, "One year": m12, "Two year": m24}',
        )
        .replace("allowed: [monthly, annual, two_year]", "allowed: [m1, m12, m24]")
    )
    changed = parse_spec(text, where="telco-v2.yaml")
    assert "term" in changed.features and "contract" not in changed.features
    return changed


def test_a_rollback_reverts_the_mapping_with_the_model(
    server: RunningServer, telco: dict[str, Any], tmp_path: Path
) -> None:
    """A client keeps sending the file's rows while the router moves from a version logged
    with another spec back to the first: each answer is its own model's on its own mapping."""
    changed = other_spec()
    mapped = apply_mapping(telco["text"], spec=changed).frame
    fitted = training.train(mapped, training.TrainingConfig(max_iter=40), changed).pipeline
    models: RegisteredModels = telco["models"]
    registry = MlflowRegistry(tracking_uri=models.tracking_uri)
    second = registry.log_and_register(
        fitted, training.model_inputs(mapped, changed), {}, {}, {}, {}, "telco-v2", spec=changed
    )
    models.model_uris[second.version] = second.model_uri
    rows = scored_rows(telco)
    body = {"records": raw_records(rows)}
    want = {
        second.version: training.predict_proba(fitted, mapped.loc[rows.index]),
        telco["version"]: expected(telco, rows),
    }
    assert not np.allclose(want[second.version], want[telco["version"]])
    token = "raw-records-rollback"
    auth = {"authorization": f"Bearer {token}"}
    with (
        start_model_server(models, second.version, tmp_path) as newer,
        start_router(tmp_path / "router.json", {"CHURN_ROUTER_ADMIN_TOKEN": token}) as url,
    ):
        for version, backend in ((second.version, newer), (telco["version"], server)):
            weights = {"backends": {version: {"url": backend.url, "weight": 100}}}
            httpx.put(url + "/-/weights", headers=auth, json=weights, timeout=30).raise_for_status()
            r = httpx.post(url + "/predict", json=body, timeout=60)
            assert r.status_code == 200 and r.json()["model_version"] == version, r.text
            np.testing.assert_allclose(r.json()["probabilities"], want[version], atol=1e-12)


def test_rows_named_like_the_features_are_mapped_cell_by_cell_as_the_snapshot_maps_them() -> None:
    """A table whose columns already carry the features' names (``spec infer`` on
    ``second_table``: ``yes``/``no`` and ``true``/``false`` flags, numbers as text, blank
    cells) has no raw names to detect: each cell not in its JSON form is mapped, and every
    record checks and builds into the frame ``apply_mapping`` gives for the same rows."""
    raw = second_table(n_rows=400, seed=5)
    _, inferred = infer_spec_text(raw, target="churn", id_column="account_id")
    schema = InputSchema.from_spec(inferred)
    mapper = RecordMapper.for_schema(schema)
    assert mapper is not None and not mapper.raw_names
    records = raw.drop(columns=["churn"]).to_dict("records")
    unmapped, _ = schema.split_entity_ids(records)
    with pytest.raises(InputError, match="must be"):  # "yes", "12.5": the check alone refuses
        schema.check([{k: v for k, v in r.items() if k in schema.by_name} for r in unmapped])
    canonical, ids = schema.split_entity_ids(mapper.canonical(records))
    assert ids == list(raw["account_id"])
    built = schema.frame([{k: v for k, v in r.items() if k in schema.by_name} for r in canonical])
    snapshot = apply_mapping(raw, spec=inferred).frame[list(built.columns)]
    assert snapshot.isna().any().any()  # blank cells became nulls in both
    pd.testing.assert_frame_equal(built, snapshot, check_dtype=False)
