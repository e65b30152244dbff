"""Each environment's servers write their own inference log, readable by its owner only,
and a retired version's log goes with it; the MLflow store is owner-only too (issue #27,
points 5 and 8)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from churn_platform.core.spec import default_spec
from churn_platform.resources.inference_log_reader import InferenceLogResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.serving.inference_log import (
    InferenceLog,
    default_inference_log_path,
    open_inference_log,
    remove_inference_log,
    rotated_path,
)
from churn_platform.serving.server_settings import ServerSettings
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.testing import RegisteredModels, to_records


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_staging_and_production_logs_are_different_files(tmp_path: Path) -> None:
    production = ServerSettings(home=tmp_path, environment="production")
    staging = ServerSettings(home=tmp_path, environment="staging")
    # production keeps the file the drift sensor reads; staging has its own folder
    assert default_inference_log_path("3", production) == tmp_path / "inference_log" / "3.jsonl"
    assert default_inference_log_path("3", ServerSettings(home=tmp_path)).name == "3.jsonl"
    assert default_inference_log_path("3", staging) == (
        tmp_path / "inference_log" / "staging" / "3.jsonl"
    )
    with pytest.raises(ValueError, match="cannot name"):
        default_inference_log_path("3", ServerSettings(home=tmp_path, environment="../x"))


def test_a_log_file_holds_customer_rows_for_its_owner_only(tmp_path: Path) -> None:
    log = open_inference_log("3", ServerSettings(home=tmp_path, environment="staging"))
    assert isinstance(log, InferenceLog)
    log.append([{"customer_id": "C1"}], [0.5])
    log.flush()
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_the_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "mlflow" / "mlflow.db"
    MlflowRegistry(tracking_uri=f"sqlite:///{db}").experiment_id()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    db.chmod(0o644)  # made before this release: narrowed on first use
    MlflowRegistry(tracking_uri=f"sqlite:///{db}").aliases()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_removing_a_log_takes_its_rotated_files_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "3.jsonl"
    keep = [tmp_path / "30.jsonl", tmp_path / "3.jsonl.bak", tmp_path / "3.jsonlx"]
    for p in [path, rotated_path(path, 1), rotated_path(path, 2), *keep]:
        p.write_text("{}\n")
    assert len(remove_inference_log(path)) == 3
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_inference_log(path) == []


@pytest.mark.integration
def test_each_environment_writes_its_own_log_and_retiring_removes_it(
    registered_models: RegisteredModels, tmp_path: Path
) -> None:
    log_dir = tmp_path / "inference_log"
    target = LocalProcessTarget(
        tmp_path / "deployments", registered_models.tracking_uri, inference_log_dir=log_dir
    )
    rows = to_records(registered_models.rows)
    # a request of >= 512 records is flushed before the answer: no waiting on a timer
    staged, released = (rows * 2)[:512], (rows * 3)[:600]
    uri = registered_models.model_uris["1"]
    try:
        for environment, records in (("staging", staged), ("production", released)):
            served = target.deploy(environment, "1", uri)
            answer = httpx.post(served.url + "/predict", json={"records": records}, timeout=60)
            assert answer.status_code == 200, answer.text

        production, staging = log_dir / "1.jsonl", log_dir / "staging" / "1.jsonl"
        assert len(_lines(staging)) == 512 and len(_lines(production)) == 600
        assert stat.S_IMODE(production.stat().st_mode) == 0o600
        # the drift sensor's window is production's traffic only
        window = InferenceLogResource(log_dir=str(log_dir)).window("1", default_spec())
        assert len(window) == 600

        target.retire("staging", "1")
        assert not staging.exists() and len(_lines(production)) == 600
        target.set_weights("production", {"1": 100})
        with pytest.raises(ValueError, match="still carries"):
            target.retire("production", "1")
    finally:
        target.stop_all()
