"""Artefacts on an object store: a real S3-compatible server (moto, over HTTP) on 127.0.0.1.

``CHURN_STORAGE_URL=s3://<bucket>/<prefix>`` with the usual AWS variables moves asset values,
snapshots, reports, MLflow artefacts and inference logs there; these tests read the objects
back through the platform and list them with boto3.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from churn_platform import settings
from churn_platform.core import schema as s
from churn_platform.core.mapping import MappedFrame, apply_mapping
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.definitions import build_definitions
from churn_platform.object_store import open_location, options_from_env, path_is_remote
from churn_platform.resources import io_manager
from churn_platform.resources.inference_log_reader import InferenceLogResource
from churn_platform.resources.io_manager import (
    POINTER,
    DataIOManager,
    StoredValueError,
    read_value,
    write_value,
)
from churn_platform.resources.s3_credentials import S3Credentials
from churn_platform.resources.storage import StorageResource
from churn_platform.serving.inference_log import (
    ObjectInferenceLog,
    open_inference_log,
    read_object_log,
)
from churn_platform.serving.server_settings import ServerSettings
from churn_platform.testing import to_records
from churn_platform_tests.s3 import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    aws_environment,
    create_bucket,
    list_keys,
    running_moto,
)


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto server for the module; each test gets its own bucket."""
    with running_moto(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_url(moto_endpoint: str, churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``CHURN_STORAGE_URL`` on a fresh bucket, credentials in the AWS variables."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    bucket = f"churn-{uuid.uuid4().hex[:12]}"
    create_bucket(moto_endpoint, bucket)
    url = f"s3://{bucket}/platform"
    monkeypatch.setenv("CHURN_STORAGE_URL", url)
    return url


def _bucket(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]


def _root(url: str) -> Path:
    return open_location(url, options_from_env())


def test_the_setting_accepts_s3_and_folders_and_names_the_fix_for_anything_else(tmp_path):
    assert settings.storage_url({"CHURN_STORAGE_URL": "s3://b/p/"}) == "s3://b/p"
    assert settings.storage_is_remote({"CHURN_STORAGE_URL": "s3://b/p"})
    env = {"CHURN_HOME": str(tmp_path)}
    assert settings.storage_url(env) == str(tmp_path)  # default: CHURN_HOME, as before
    assert not settings.storage_is_remote(env)
    with pytest.raises(settings.SettingsError, match="CHURN_STORAGE_URL='gs://b'.*'gs'"):
        settings.storage_url({"CHURN_STORAGE_URL": "gs://b"})
    with pytest.raises(settings.SettingsError, match="names no bucket"):
        settings.storage_url({"CHURN_STORAGE_URL": "s3:///p"})


def test_frames_records_and_json_round_trip_on_s3(s3_url, moto_endpoint):
    root = _root(s3_url + "/storage")
    assert path_is_remote(root)
    frame = pd.DataFrame(
        {"id": ["a", "b"], "n": pd.array([1, None], dtype="Int64"), "x": [0.5, 1.5]},
        index=[7, 9],
    )
    write_value(root / "holdout_set", frame)
    pd.testing.assert_frame_equal(read_value(root / "holdout_set"), frame)

    raw = generate(SyntheticSpec(n_rows=50, seed=1)).astype({"monthly_spend": str})
    raw.loc[3, "monthly_spend"] = "lots"
    mapped = apply_mapping(raw, spec=default_spec())
    write_value(root / "churn_snapshot", mapped)
    back = read_value(root / "churn_snapshot")
    assert isinstance(back, MappedFrame)
    pd.testing.assert_frame_equal(back.frame, mapped.frame)

    value = {"promote": True, "ci": (0.1, 0.2), "by_version": {1: "champion"}, "none": None}
    write_value(root / "gate", value)
    assert read_value(root / "gate") == value

    keys = list_keys(moto_endpoint, _bucket(s3_url), "platform/storage/churn_snapshot/")
    assert f"platform/storage/churn_snapshot/{POINTER}" in keys
    assert sum(k.endswith(".parquet") for k in keys) >= 2  # the rows and the examples, Parquet


def test_a_killed_write_on_s3_is_never_read_as_whole_and_is_cleaned_up_later(s3_url, monkeypatch):
    folder = _root(s3_url + "/storage") / "validated_churn_data"
    write_value(folder, {"generation": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the pointer")

    monkeypatch.setattr(io_manager, "_write_pointer", killed)
    with pytest.raises(KeyboardInterrupt):
        write_value(folder, pd.DataFrame({"generation": [2, 2]}))
    monkeypatch.undo()
    written = [p for p in folder.iterdir() if p.name.startswith("v-")]
    assert len(written) == 2  # the killed write's frame and manifest are in the bucket...
    assert read_value(folder) == {"generation": 1}  # ...and no reader follows them
    # a write killed before its pointer: the data objects and even the manifest are there
    dead = folder / "v-00000000000000000002-dead"
    (dead / "frame-0.parquet").write_bytes(b"PAR1 half")
    (dead / "value.json").write_text('{"format": "churn_platform.io/1", "value": 2}')
    assert read_value(folder) == {"generation": 1}
    # a write killed after some of its objects, before the manifest
    half = folder / "v-99999999999999999999-half"
    (half / "frame-0.parquet").write_bytes(b"PAR1")
    assert read_value(folder) == {"generation": 1}

    write_value(folder, {"generation": 3})
    assert read_value(folder) == {"generation": 3}
    write_value(folder, {"generation": 4})
    names = sorted(p.name for p in folder.iterdir())
    assert "v-00000000000000000002-dead" not in names  # older than the kept ones: pruned
    assert read_value(folder) == {"generation": 4}


def test_nothing_stored_on_s3_says_so(s3_url):
    with pytest.raises(StoredValueError, match="nothing stored at s3://.*materialise"):
        read_value(_root(s3_url) / "storage" / "never_written")


def test_the_io_manager_and_storage_resource_write_to_the_bucket_through_dagster(
    s3_url, moto_endpoint, churn_home
):
    from churn_platform.resources.environments import resources_for_environment

    resources = resources_for_environment()
    manager, storage = resources["io_manager"], resources["storage"]
    assert isinstance(manager, DataIOManager) and manager.base_dir == s3_url + "/storage"
    assert isinstance(storage, StorageResource) and storage.base_url == s3_url

    @dg.asset
    def upstream(storage: StorageResource) -> pd.DataFrame:
        storage.write_text("reports/q.md", "# quality")
        storage.write_frame("snapshots/s.parquet", pd.DataFrame({"a": [1, 2]}), index=False)
        return pd.DataFrame({"a": [1, 2, 3]})

    @dg.asset
    def downstream(upstream: pd.DataFrame) -> dict[str, int]:
        return {"rows": len(upstream)}

    result = dg.materialize(
        [upstream, downstream],
        resources={"io_manager": manager, "storage": storage},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert result.output_for_node("downstream") == {"rows": 3}
    keys = list_keys(moto_endpoint, _bucket(s3_url))
    assert "platform/reports/q.md" in keys and "platform/snapshots/s.parquet" in keys
    assert {k.split("/")[2] for k in keys if k.startswith("platform/storage/")} == {
        "upstream",
        "downstream",
    }
    assert (_root(s3_url) / "reports" / "q.md").read_text() == "# quality"
    assert list(churn_home.iterdir()) == []  # nothing local


def test_credentials_are_passed_as_env_var_names_not_values(s3_url):
    credentials = S3Credentials.from_env()
    # the UI and the run config show the variables' names; Dagster resolves them at run time
    assert {k: v.env_var_name for k, v in credentials.__dict__.items() if v} == {
        "key": "AWS_ACCESS_KEY_ID",
        "secret": "AWS_SECRET_ACCESS_KEY",
        "endpoint_url": "AWS_ENDPOINT_URL",
        "region": "AWS_DEFAULT_REGION",
    }


def _server_settings(s3_url: str) -> ServerSettings:
    """What a model server started with ``CHURN_STORAGE_URL=s3_url`` and the AWS variables
    reads."""
    return ServerSettings(storage_url=s3_url, storage_options=options_from_env())


def _wait_until(condition, what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` (a generous bound: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_inference_log_batches_are_objects_read_back_as_the_newest_window(s3_url, moto_endpoint):
    rows = generate(SyntheticSpec(n_rows=250, seed=5))
    records = to_records(rows)
    log = open_inference_log("7", _server_settings(s3_url))
    assert isinstance(log, ObjectInferenceLog)  # CHURN_STORAGE_URL is s3: batch objects
    log.close()
    log = ObjectInferenceLog(_root(s3_url), "7", flush_records=100, flush_seconds=3600.0)
    try:
        for start in range(0, 250, 50):  # requests of 50 records
            chunk = records[start : start + 50]
            log.append(chunk, [0.25] * len(chunk))
            if (start + 50) % 100 == 0:  # 100 rows waiting: the writer thread puts one object
                done = (start + 50) // 100
                _wait_until(lambda done=done: log.batches_written == done, f"batch {done}")
    finally:
        log.close()  # the last 50 rows: a third object
    keys = list_keys(moto_endpoint, _bucket(s3_url), "platform/inference_log/7/")
    assert len(keys) == 3 and all(k.endswith(".parquet") for k in keys)

    credentials = S3Credentials(
        key=ACCESS_KEY_ID, secret=SECRET_ACCESS_KEY, endpoint_url=moto_endpoint, region=REGION
    )
    resource = InferenceLogResource(storage_url=s3_url, s3=credentials, max_rows=120)
    window = resource.window("7", default_spec())
    assert len(window) == 120
    newest = pd.DataFrame(records[-120:])  # the newest rows, oldest first
    pd.testing.assert_series_equal(
        window[s.MONTHLY_SPEND].astype(float), newest[s.MONTHLY_SPEND].astype(float)
    )
    assert set(s.MODEL_INPUT_COLUMNS) <= set(window.columns)
    assert (window["model_version"] == "7").all()
    assert resource.window("8", default_spec()).empty  # another version: nothing


def test_inference_log_writes_after_flush_seconds_without_more_requests(s3_url):
    log = ObjectInferenceLog(_root(s3_url), "3", flush_records=1_000, flush_seconds=0.2)
    try:
        log.append(to_records(generate(SyntheticSpec(n_rows=5, seed=1))), [0.5] * 5)
        _wait_until(lambda: log.batches_written == 1, "the timed flush")
    finally:
        log.close()
    assert len(read_object_log(_root(s3_url), "3", default_spec())) == 5


def test_the_graph_and_the_drift_sensor_run_on_s3_with_nothing_local_but_the_instance(
    s3_url, moto_endpoint, churn_home, tmp_path, monkeypatch
):
    """Snapshot, contract, holdout, training, evaluation and the drift sensor against moto:
    every artefact lands in the bucket; CHURN_HOME holds only the Dagster instance (the MLflow
    tracking database is a server's job on a cluster; here a SQLite file outside CHURN_HOME)."""
    from churn_platform.resources.environments import resources_for_environment
    from churn_platform_tests.pipeline import (
        FAST_GATE,
        FAST_MODEL,
        THROUGH_EVALUATION,
        materialize,
        materialized,
        registry,
        sensor,
        step_error,
    )

    database = tmp_path / "mlflow-db"
    database.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database / 'mlflow.db'}")
    for name, value in {"CHURN_SOURCE": "synthetic", "CHURN_SYNTHETIC_ROWS": "3000"}.items():
        monkeypatch.setenv(name, value)
    for name in ("CHURN_SYNTHETIC_SPEND_SHIFT", "CHURN_PSI_THRESHOLD", "CHURN_DRIFT_MIN_ROWS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (churn_home / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(tempdir=str(churn_home / "dagster"))

    result = materialize(
        THROUGH_EVALUATION,
        instance,
        {"challenger_model": {"config": FAST_MODEL}, "evaluation_report": {"config": FAST_GATE}},
    )
    assert result.success, step_error(result)
    assert materialized(result) == set(THROUGH_EVALUATION)

    keys = list_keys(moto_endpoint, _bucket(s3_url))
    stored = {k.split("/")[2] for k in keys if k.startswith("platform/storage/")}
    assert stored == set(THROUGH_EVALUATION)
    assert any(k.startswith("platform/snapshots/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith("platform/reports/quality_") for k in keys)
    mlflow_keys = [k for k in keys if k.startswith("platform/mlflow/")]
    assert any(k.endswith("/reference_profile.json") for k in mlflow_keys)
    assert any(k.endswith("/evaluation_report.md") for k in mlflow_keys)
    assert any(k.endswith("/MLmodel") for k in mlflow_keys)
    snapshot = instance.get_latest_materialization_event(dg.AssetKey("churn_snapshot"))
    assert snapshot.asset_materialization.metadata["parquet"].value.startswith(s3_url)

    # the drift sensor: the champion's profile from MLflow's S3 artefacts, the servers'
    # batches from the bucket
    reg = registry()
    version = reg.alias_version("challenger")
    assert version is not None
    reg.set_alias("champion", version)
    resources = resources_for_environment()
    sensor_resources = {
        k: resources[k]
        for k in ("mlflow_registry", "data_source", "inference_log", "notifier", "storage")
    }

    def tick(cursor: str | None = None):
        context = dg.build_sensor_context(
            definitions=build_definitions(),
            cursor=cursor,
            resources=sensor_resources,
            instance=instance,
        )
        return sensor("psi_drift_sensor").evaluate_tick(context)

    quiet = tick()
    assert quiet.run_requests == [] and "inference_log: 0 rows" in quiet.skip_message

    log = open_inference_log(version, _server_settings(s3_url))  # as a server on the cluster
    assert isinstance(log, ObjectInferenceLog)
    shifted = generate(SyntheticSpec(n_rows=1_000, seed=11, spend_shift=60.0))
    records = to_records(shifted)
    try:
        for start in range(0, len(records), 100):
            log.append(records[start : start + 100], [0.5] * len(records[start : start + 100]))
    finally:
        log.close()
    assert log.batches_written >= 1

    fired = tick(quiet.cursor)
    assert [r.run_key for r in fired.run_requests] == ["drift-episode-1"]
    assert fired.run_requests[0].tags["churn/drift_window"] == "inference_log"

    assert sorted(p.name for p in churn_home.iterdir()) == ["dagster"]


def test_a_model_server_logs_its_requests_to_the_bucket_and_the_sensor_window_sees_them(
    s3_url, moto_endpoint, churn_home
):
    from starlette.testclient import TestClient

    from churn_platform.core import training
    from churn_platform.serving.model_server.app import create_app
    from churn_platform.serving.model_server.schema import InputSchema

    rows = generate(SyntheticSpec(n_rows=600, seed=2))
    pipeline = training.train(rows, training.TrainingConfig(max_iter=10), default_spec()).pipeline
    app = create_app(
        "models:/churn_model/4",
        "4",
        settings=_server_settings(s3_url),
        model=pipeline,
        input_schema=InputSchema.from_spec(default_spec()),
    )
    records = to_records(rows.head(30))
    with TestClient(app) as client:
        _wait_until(lambda: client.get("/health").status_code == 200, "the model")
        for start in range(0, 30, 10):
            answer = client.post("/predict", json={"records": records[start : start + 10]})
            assert answer.status_code == 200, answer.text
    # shutdown flushed the buffer: every scored record is in the bucket, nothing local
    assert list_keys(moto_endpoint, _bucket(s3_url), "platform/inference_log/4/")
    window = read_object_log(_root(s3_url), "4", default_spec())
    assert len(window) == 30
    assert window[s.MONTHLY_SPEND].astype(float).tolist() == pytest.approx(
        [float(r[s.MONTHLY_SPEND]) for r in records]
    )
    assert not (churn_home / "inference_log").exists()


def test_a_model_server_logs_the_entity_and_request_ids_to_the_bucket(s3_url, moto_endpoint):
    """Issue #23: each batch row carries the record's entity id (null without one) and its
    request's id, beside the probability, version and served time; the sensor's window
    reads them back as columns, the customer id never as a feature."""
    from starlette.testclient import TestClient

    from churn_platform.core import training
    from churn_platform.serving.model_server.app import create_app
    from churn_platform.serving.model_server.schema import InputSchema

    rows = generate(SyntheticSpec(n_rows=600, seed=3))
    pipeline = training.train(rows, training.TrainingConfig(max_iter=10), default_spec()).pipeline
    app = create_app(
        "models:/churn_model/5",
        "5",
        settings=_server_settings(s3_url),
        model=pipeline,
        input_schema=InputSchema.from_spec(default_spec()),
    )
    ids = [str(i) for i in rows[s.CUSTOMER_ID].head(6)]
    records = [{s.CUSTOMER_ID: i, **r} for i, r in zip(ids, to_records(rows.head(6)), strict=True)]
    records[5].pop(s.CUSTOMER_ID)
    with TestClient(app) as client:
        _wait_until(lambda: client.get("/health").status_code == 200, "the model")
        given = client.post(
            "/predict", json={"records": records[:3]}, headers={"X-Request-Id": "bucket-1"}
        )
        made = client.post("/invocations", json={"dataframe_records": records[3:]})
        assert given.status_code == made.status_code == 200, (given.text, made.text)
    made_id = made.headers["x-request-id"]
    assert made.json()["request_id"] == made_id and made.json()["entity_ids"] == [*ids[3:5], None]
    credentials = S3Credentials(
        key=ACCESS_KEY_ID, secret=SECRET_ACCESS_KEY, endpoint_url=moto_endpoint, region=REGION
    )
    window = InferenceLogResource(storage_url=s3_url, s3=credentials).window("5", default_spec())
    assert window["entity_id"].tolist() == [*ids[:5], None]
    assert window["request_id"].tolist() == ["bucket-1"] * 3 + [made_id] * 3
    scores = [*given.json()["probabilities"], *made.json()["predictions"]]
    assert window["probability"].tolist() == pytest.approx(scores)
    assert set(window["model_version"]) == {"5"} and window["ts"].notna().all()
    assert s.CUSTOMER_ID not in window.columns
