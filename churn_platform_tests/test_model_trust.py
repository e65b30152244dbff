"""A model server loads only what the platform registered: a skops artefact whose SHA-256
matches the digest recorded at registration (issue #27, point 3)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.serving.model_server.faults import FaultInjector
from churn_platform.serving.model_server.instruments import ServerMetrics
from churn_platform.serving.model_server.loading import ARTIFACT_DIGEST_TAG
from churn_platform.serving.model_server.service import ModelService
from churn_platform.settings import MODEL_NAME
from churn_platform.testing import (
    RegisteredModels,
    canonical,
    log_and_register,
    start_model_server,
    train_logistic,
)


class _Planted:
    """Unpickling this creates ``marker``: proof that a planted pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModels:
    """Three registered versions of one small model: two to tamper with, one left intact."""
    root = tmp_path_factory.mktemp("trust")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    train = generate(SyntheticSpec(n_rows=400, seed=5))
    pipeline = train_logistic(train, 1.0)
    uris = {}
    for _ in range(3):
        version = log_and_register(pipeline, train, tracking_uri)
        uris[version] = f"models:/{MODEL_NAME}/{version}"
    return RegisteredModels(tracking_uri, root, uris, {}, train.head(20))


def _artefact_dir(models: RegisteredModels, version: str) -> Path:
    """Where the store keeps ``version``'s model files (what an attacker with disk access edits)."""
    client = mlflow.MlflowClient(models.tracking_uri, registry_uri=models.tracking_uri)
    location = client.get_model_version_download_uri(MODEL_NAME, version)
    return Path(location.removeprefix("file://"))


def _load(models: RegisteredModels, version: str) -> ModelService:
    """Load ``version`` as a server does at startup (the service behind ``/health``)."""
    service = ModelService(
        models.model_uris[version], version, ServerMetrics(version), _NoLog(), FaultInjector(0), 1
    )
    service.load(models.tracking_uri)
    return service


class _NoLog:
    def append(self, records: Any, probabilities: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _plant_pickle(models: RegisteredModels, version: str, marker: Path) -> None:
    """Rewrite ``version``'s MLmodel to pickle and point it at a planted file."""
    folder = _artefact_dir(models, version)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update(serialization_format="pickle", pickled_model="model.pkl")
    mlmodel["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (folder / "model.pkl").write_bytes(pickle.dumps(_Planted(str(marker))))


def test_registration_records_the_artefacts_digest(versions: RegisteredModels) -> None:
    client = mlflow.MlflowClient(versions.tracking_uri, registry_uri=versions.tracking_uri)
    for version in versions.model_uris:
        digest = client.get_model_version(MODEL_NAME, version).tags[ARTIFACT_DIGEST_TAG]
        assert len(digest) == 64 and int(digest, 16) >= 0


def test_a_pickle_planted_through_the_mlmodel_is_refused_and_never_run(
    versions: RegisteredModels, tmp_path: Path
) -> None:
    version = sorted(versions.model_uris)[0]
    marker = tmp_path / "planted-ran"
    _plant_pickle(versions, version, marker)

    service = _load(versions, version)
    status, body = service.health()
    assert status == 503 and body["status"] == "failed"
    assert f"version {version}" in body["error"] and "'pickle'" in body["error"]
    assert not marker.exists()

    # the real process: startup fails with the refusal in the log, /health never said ok
    with (
        pytest.raises(RuntimeError, match="serialization_format 'pickle'"),
        start_model_server(versions, version, tmp_path),
    ):
        pass
    assert not marker.exists()


def test_a_changed_skops_file_is_refused_by_its_digest(versions: RegisteredModels) -> None:
    version = sorted(versions.model_uris)[1]
    skops_file = _artefact_dir(versions, version) / "model.skops"
    skops_file.write_bytes(skops_file.read_bytes() + b"\0")

    status, body = _load(versions, version).health()
    assert status == 503 and body["status"] == "failed"
    assert f"version {version} of {MODEL_NAME}" in body["error"]
    assert "model.skops" in body["error"] and "sha256" in body["error"]


def test_a_version_registered_without_a_digest_is_refused(
    versions: RegisteredModels, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(versions.tracking_uri, registry_uri=versions.tracking_uri)
    version = sorted(versions.model_uris)[2]
    source = client.get_model_version(MODEL_NAME, version).source
    copy = client.create_model_version(MODEL_NAME, source, tags={})
    status, body = _load(
        RegisteredModels(
            versions.tracking_uri,
            versions.root,
            {str(copy.version): f"models:/{MODEL_NAME}/{copy.version}"},
            {},
            versions.rows,
        ),
        str(copy.version),
    ).health()
    assert status == 503 and ARTIFACT_DIGEST_TAG in body["error"]


def test_an_untampered_version_serves(versions: RegisteredModels) -> None:
    version = sorted(versions.model_uris)[2]
    service = _load(versions, version)
    status, body = service.health()
    assert status == 200 and body["status"] == "ok", body
    scores = service.pipeline.predict_proba(canonical(versions.rows))[:, 1]
    assert len(scores) == len(versions.rows) and ((scores >= 0) & (scores <= 1)).all()
