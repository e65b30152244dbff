"""Shared fixtures: every test gets its own CHURN_HOME and MLflow store, never the repo's data/;
a real HTTP receiver (`receiver`) for the notification and alerting tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from churn_platform.testing import RegisteredModels, make_registered_models
from churn_platform_tests.http_receiver import Receiver, running_receiver

os.environ.setdefault("OMP_NUM_THREADS", "2")
pytest_plugins = ["churn_platform_tests.skip_summary"]  # what was skipped, and how to enable it


@pytest.fixture
def churn_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh platform home (snapshots, MLflow SQLite store, deployments) for one test."""
    home = tmp_path / "churn_home"
    home.mkdir()
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    for var in (
        "CHURN_SOURCE",
        "CHURN_SOURCE_PATH",
        "CHURN_MAPPING_FILE",
        "CHURN_ENV",
        "CHURN_AUTO_RELEASE",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def local_platform(churn_home: Path, monkeypatch: pytest.MonkeyPatch):
    """A synthetic-data platform (20,000 rows from a file source) whose model servers and
    routers are stopped however the test ends."""
    from churn_platform.core.synthetic import SyntheticSpec, generate
    from churn_platform.targets.local import LocalProcessTarget

    path = churn_home / "snapshot.parquet"
    generate(SyntheticSpec(n_rows=20_000, seed=21)).to_parquet(path, index=False)
    monkeypatch.setenv("CHURN_SOURCE", "file")
    monkeypatch.setenv("CHURN_SOURCE_PATH", str(path))
    monkeypatch.delenv("CHURN_FAULT_RATE", raising=False)
    monkeypatch.delenv("CHURN_FAULT_MODE", raising=False)
    yield churn_home
    LocalProcessTarget(churn_home / "deployments").stop_all()


@pytest.fixture(autouse=True, scope="session")
def _session_home(tmp_path_factory: pytest.TempPathFactory):
    """Keep tests that forget the ``churn_home`` fixture out of the repository's data/ folder."""
    home = tmp_path_factory.mktemp("session_churn_home")
    old = os.environ.get("CHURN_HOME")
    os.environ["CHURN_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("CHURN_HOME", None)
    else:
        os.environ["CHURN_HOME"] = old


@pytest.fixture(scope="session")
def registered_models(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModels:
    """``churn_model`` versions 1 and 2 in a temporary SQLite MLflow store (one per session)."""
    root = tmp_path_factory.mktemp("mlflow")
    cwd = os.getcwd()
    os.chdir(root)  # the default artifact root of a sqlite store is ./mlruns
    try:
        return make_registered_models(root)
    finally:
        os.chdir(cwd)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 (``http_receiver.Receiver``)."""
    with running_receiver() as rec:
        yield rec
