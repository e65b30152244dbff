"""MLflow's scoring protocol: our model server against a real ``mlflow models serve`` on the
same registered model, and the registered model through ``mlflow.pyfunc``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from churn_platform.core.spec import default_spec
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.targets.local import child_env, log_tail
from churn_platform.testing import (
    RegisteredModels,
    RunningServer,
    canonical,
    free_port,
    start_model_server,
    to_records,
)

pytestmark = pytest.mark.integration


@dataclass
class Champion:
    models: RegisteredModels  # the registry logged the same way the platform does
    expected: np.ndarray  # P(churn) of the first rows, offline


@pytest.fixture(scope="module")
def champion(
    registered_models: RegisteredModels, tmp_path_factory: pytest.TempPathFactory
) -> Champion:
    root = tmp_path_factory.mktemp("mlflow-protocol")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    registry = MlflowRegistry(tracking_uri=uri, experiment_name="protocol")
    pipeline = registered_models.pipelines["1"]
    rows = registered_models.rows
    registered = registry.log_and_register(
        pipeline, canonical(rows.head(50)), {}, {}, {}, {}, "protocol-test", spec=default_spec()
    )
    registry.set_alias("champion", registered.version)
    models = RegisteredModels(
        uri, root, {"1": "models:/churn_model@champion"}, {"1": pipeline}, rows
    )
    expected = pipeline.predict_proba(canonical(rows.head(5)))[:, 1]
    return Champion(models, expected)


@pytest.fixture(scope="module")
def ours(champion: Champion, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_model_server(champion.models, "1", tmp_path_factory.mktemp("ours")) as srv:
        yield srv


@pytest.fixture(scope="module")
def theirs(champion: Champion, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("mlflow-serve")
    port = free_port()
    log = work / "mlflow-serve.log"
    env = child_env(
        {
            "MLFLOW_TRACKING_URI": champion.models.tracking_uri,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [mlflow_bin, "models", "serve", "-m", "models:/churn_model@champion"]
            + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a limit on a failure, not a tuned wait
        while True:
            assert proc.poll() is None, f"mlflow models serve exited:\n{log_tail(log)}"
            try:
                if httpx.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"mlflow models serve not up:\n{log_tail(log)}"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def payloads(records: list[dict]) -> dict[str, tuple[bytes | dict, str]]:
    """The same rows in every shape MLflow's scoring server accepts."""
    columns = list(records[0])
    import pandas as pd

    csv = pd.DataFrame(records, columns=columns).to_csv(index=False).encode()
    return {
        "dataframe_split": (
            {"dataframe_split": {"columns": columns, "data": [list(r.values()) for r in records]}},
            "application/json",
        ),
        "dataframe_records": ({"dataframe_records": records}, "application/json"),
        "instances": ({"instances": records}, "application/json"),
        "inputs": ({"inputs": {c: [r[c] for r in records] for c in columns}}, "application/json"),
        "csv": (csv, "text/csv"),
    }


def post(url: str, body: bytes | dict, content_type: str) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(url + "/invocations", json=body, timeout=30)
    return httpx.post(
        url + "/invocations", content=body, headers={"content-type": content_type}, timeout=30
    )


def test_pyfunc_of_the_registered_champion_returns_churn_probabilities(
    champion: Champion,
) -> None:
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(champion.models.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn_model@champion")
    frame = canonical(champion.models.rows.head(5))
    out = model.predict(frame)
    # one churn probability per row: not class labels, not [P(stay), P(churn)]
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (5,)
    np.testing.assert_array_equal(out, champion.expected)
    output = model.metadata.get_output_schema().to_dict()
    assert output == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": (-1,)}}]
    # the sklearn flavour is MLflow's own: the pipeline loads as it was logged
    pipeline = mlflow.sklearn.load_model("models:/churn_model@champion")
    np.testing.assert_array_equal(pipeline.predict_proba(frame)[:, 1], out)


_WITHOUT_THE_PLATFORM = """
import importlib.abc, json, sys
class NoPlatform(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "churn_platform":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, NoPlatform())
import mlflow, pandas as pd
frame = pd.read_parquet(sys.argv[1])
out = mlflow.pyfunc.load_model("models:/churn_model@champion").predict(frame)
print(json.dumps({"out": [float(v) for v in out], "churn_platform": "churn_platform" in sys.modules}))
"""


def test_pyfunc_loads_and_predicts_where_the_platform_is_not_installed(
    champion: Champion, tmp_path: Path
) -> None:
    """A notebook or Spark worker has MLflow and the model's requirements, not churn_platform."""
    frame_path = tmp_path / "rows.parquet"
    canonical(champion.models.rows.head(5)).to_parquet(frame_path)
    env = child_env({"MLFLOW_TRACKING_URI": champion.models.tracking_uri})
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_PLATFORM, str(frame_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["churn_platform"] is False
    np.testing.assert_array_equal(answer["out"], champion.expected)


def test_spark_udf_batch_scoring_gives_the_servers_numbers(champion: Champion) -> None:
    """Batch scoring as a data team does it: ``mlflow.pyfunc.spark_udf`` on a Spark frame."""
    if shutil.which("java") is None:
        pytest.skip("no Java runtime for pyspark (Debian package default-jre-headless)")
    import mlflow
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("churn-spark-udf-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        mlflow.set_tracking_uri(champion.models.tracking_uri)
        frame = canonical(champion.models.rows.head(5))
        rows = spark.createDataFrame(frame)
        churn = mlflow.pyfunc.spark_udf(
            spark, "models:/churn_model@champion", result_type="double", env_manager="local"
        )
        scored = rows.withColumn("p_churn", churn(*[rows[c] for c in frame.columns]))
        out = scored.select("p_churn").toPandas()["p_churn"].to_numpy()
    finally:
        spark.stop()
    np.testing.assert_array_equal(out, champion.expected)


def test_invocations_give_the_same_numbers_as_mlflow_models_serve(
    champion: Champion, ours: RunningServer, theirs: str
) -> None:
    records = to_records(champion.models.rows.head(5))
    predicted = httpx.post(ours.url + "/predict", json={"records": records}).json()
    for name, (body, content_type) in payloads(records).items():
        a = post(ours.url, body, content_type)
        assert a.status_code == 200, (name, a.text)
        mine = np.asarray(a.json()["predictions"])
        np.testing.assert_allclose(mine, champion.expected, rtol=1e-9, err_msg=name)
        b = post(theirs, body, content_type)
        if name == "csv":
            # mlflow's CSV parser casts with the signature's dtypes and fails on the datetime
            # column (signup_date); ours takes the CSV DataFrame.to_csv writes
            assert b.status_code == 400 and "Failed to parse input" in b.text
            continue
        assert b.status_code == 200, (name, b.text[:500])
        reference = np.asarray(b.json()["predictions"], dtype=float)
        np.testing.assert_allclose(mine, reference, rtol=1e-6, err_msg=name)
        assert a.json()["predictions"] == predicted["probabilities"]


def test_ping_and_version_answer_like_mlflow(ours: RunningServer, theirs: str) -> None:
    for path in ("/ping", "/version"):
        a, b = httpx.get(ours.url + path), httpx.get(theirs + path)
        assert (a.status_code, a.text) == (b.status_code, b.text), path


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ([{"tenure_months": 3}], 400, ["exactly one of the input fields", "list"]),
        ({"records": []}, 400, ["exactly one of the input fields", "records"]),
        ({"dataframe_split": []}, 400, ["split format must be a dictionary"]),
        ({"dataframe_records": {}}, 400, ["must be a list of records"]),
        ({"dataframe_split": {"data": [[1]], "foo": 1}}, 400, ["'data' field"]),
    ],
)
def test_malformed_payloads_are_refused_like_mlflow(
    ours: RunningServer, theirs: str, body: object, status: int, words: list[str]
) -> None:
    a = httpx.post(ours.url + "/invocations", json=body)
    b = httpx.post(theirs + "/invocations", json=body)
    assert a.status_code == b.status_code == status, (a.text, b.text[:300])
    assert a.json()["error_code"] == b.json()["error_code"] == "BAD_REQUEST"
    for word in words:
        assert word in a.json()["message"], a.json()


def test_bad_values_are_a_400_naming_the_field(champion: Champion, ours: RunningServer) -> None:
    records = to_records(champion.models.rows.head(2))
    records[1]["region"] = "atlantis" * 1000
    r = httpx.post(ours.url + "/invocations", json={"dataframe_records": records})
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
    message = r.json()["message"]
    assert "records[1].region" in message and len(message) < 300, message
    # a CSV cell no reading turns into its column's type (raw records: text the spec maps
    # is read, e.g. " 12"): named by the check with the record and the value
    row = pd.DataFrame([{**to_records(champion.models.rows.head(1))[0], "tenure_months": "abc"}])
    csv = row.to_csv(index=False).encode()
    r = httpx.post(ours.url + "/invocations", content=csv, headers={"content-type": "text/csv"})
    message = r.json()["message"]
    assert r.status_code == 400 and "records[0].tenure_months" in message, message
    assert "'abc'" in message, message
    r = httpx.post(ours.url + "/invocations", content=b"x", headers={"content-type": "text/xml"})
    assert r.status_code == 415


def test_a_csv_field_over_the_parser_limit_is_a_400_naming_the_line(ours: RunningServer) -> None:
    body = b"tenure_months,region\n3,north\n4," + b"a" * 140_000 + b"\n"  # > field_size_limit
    r = httpx.post(ours.url + "/invocations", content=body, headers={"content-type": "text/csv"})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert r.json()["error_code"] == "BAD_REQUEST" and "line 3" in message, message
    assert "DataFrame.to_csv" in message and len(message) < 400, message
    assert httpx.get(ours.url + "/ping").status_code == 200  # the server is unharmed
