"""Fixtures for the serving tests: a real MLflow store with registered models, real processes.

Import the fixtures you need into a test module (``from churn_platform_tests.serving_fixtures
import registered_models``); ``conftest.py`` belongs to the lead.

``registered_models`` logs two small pipelines (one-hot + logistic regression, trained on
synthetic rows) to a temporary ``sqlite:///`` store and registers them as ``churn_model``
versions 1 and 2, with a signature inferred from the input frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from churn_platform.core import schema as s
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.serving.local_target import (
    bind_socket,
    child_env,
    spawn,
    stop_process,
    wait_healthy,
)
from churn_platform.settings import MODEL_NAME

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass
class RegisteredModels:
    """A temporary MLflow store holding ``churn_model`` versions."""

    tracking_uri: str
    root: Path
    model_uris: dict[str, str]  # version -> models:/churn_model/<version>
    pipelines: dict[str, Any]  # version -> the fitted pipeline that was logged
    rows: pd.DataFrame  # canonical rows (never used for training) to score


def train_logistic(frame: pd.DataFrame, c: float) -> Any:
    """One-hot(contract_type, region) + numeric passthrough + logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    features = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), [s.CONTRACT_TYPE, s.REGION]),
            ("numbers", "passthrough", list(s.NUMERIC_FEATURES)),
        ]
    )
    pipeline = Pipeline([("features", features), ("model", LogisticRegression(C=c, max_iter=2000))])
    return pipeline.fit(frame[list(s.MODEL_INPUT_COLUMNS)], frame[s.TARGET])


def log_and_register(pipeline: Any, frame: pd.DataFrame, tracking_uri: str) -> str:
    """Log ``pipeline`` with a signature and register it as ``churn_model``; return the version."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    X = frame[list(s.MODEL_INPUT_COLUMNS)].head(200)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=infer_signature(X, pipeline.predict_proba(X)[:, 1]),
                input_example=X.head(2),
                pip_requirements=[f"scikit-learn=={sklearn.__version__}", "pandas"],
                registered_model_name=MODEL_NAME,
            )
        return str(info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(previous)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """The model input columns with ``schema.CANONICAL_DTYPES`` (what the server builds)."""
    X = frame[list(s.MODEL_INPUT_COLUMNS)]
    return X.astype({c: s.CANONICAL_DTYPES[c] for c in X.columns})


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON request records (dates as ISO strings)."""
    X = frame[list(s.MODEL_INPUT_COLUMNS)].copy()
    X[s.SIGNUP_DATE] = pd.to_datetime(X[s.SIGNUP_DATE]).dt.strftime("%Y-%m-%d")
    return json.loads(X.to_json(orient="records"))


def make_registered_models(root: Path) -> RegisteredModels:
    """Train, log and register versions 1 (C=1.0) and 2 (C=0.05) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ARTIFACT_ROOT", str(root / "artifacts"))
    train = generate(SyntheticSpec(n_rows=3000, seed=11))
    rows = generate(SyntheticSpec(n_rows=300, seed=99, id_offset=10_000))
    pipelines: dict[str, Any] = {}
    uris: dict[str, str] = {}
    for c in (1.0, 0.05):
        pipeline = train_logistic(train, c)
        version = log_and_register(pipeline, train, tracking_uri)
        pipelines[version] = pipeline
        uris[version] = f"models:/{MODEL_NAME}/{version}"
    return RegisteredModels(tracking_uri, root, uris, pipelines, rows)


@pytest.fixture(scope="session")
def registered_models(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModels:
    """``churn_model`` versions 1 and 2 in a temporary SQLite MLflow store."""
    root = tmp_path_factory.mktemp("mlflow")
    cwd = os.getcwd()
    os.chdir(root)  # the default artifact root of a sqlite store is ./mlruns
    try:
        return make_registered_models(root)
    finally:
        os.chdir(cwd)


@dataclass
class RunningServer:
    """A model server process started by ``start_model_server``."""

    pid: int
    url: str
    log: Path
    version: str
    inference_log: Path


@contextlib.contextmanager
def start_model_server(
    models: RegisteredModels,
    version: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """Run ``python -m churn_platform.serving model-server`` on a free port; stop it after."""
    sock = bind_socket()
    port = sock.getsockname()[1]
    log = workdir / f"model-{version}-{port}.log"
    inference_log = workdir / f"inference-{version}-{port}.jsonl"
    env = child_env({"MLFLOW_TRACKING_URI": models.tracking_uri, **(extra_env or {})})
    args = ["model-server", "--model-uri", models.model_uris[version], "--version", version]
    pid = spawn([*args, "--inference-log", str(inference_log)], log, sock, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", pid, log, 90.0, f"test model server {version}")
        yield RunningServer(pid, url, log, version, inference_log)
    finally:
        stop_process(pid)


def free_port() -> int:
    """A port nobody listens on right now (for programs that cannot take a socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningPrometheus:
    """A Prometheus server started by ``start_prometheus``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def start_prometheus(config_file: Path, workdir: Path) -> Iterator[RunningPrometheus]:
    """Run the real ``prometheus`` binary on a free port with its own storage; stop it after."""
    if not Path(PROMETHEUS_BIN).exists():
        pytest.skip("prometheus binary not installed (apt-get install prometheus)")
    port = free_port()
    log = workdir / "prometheus.log"
    storage = workdir / "prometheus-data"
    storage.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after 30s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield RunningPrometheus(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def offline_probabilities(
    models: RegisteredModels, version: str, frame: pd.DataFrame
) -> np.ndarray:
    """What the logged pipeline says offline for ``frame`` (canonical dtypes)."""
    return models.pipelines[version].predict_proba(canonical(frame))[:, 1]
