"""The model layer and the promotion gate through Dagster, against a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from churn_platform.core import schema as s
from churn_platform.core import training
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.io_manager import read_value
from churn_platform.targets.local import LocalProcessTarget
from churn_platform_tests.pipeline import (
    FAST_GATE,
    FAST_MODEL,
    THROUGH_EVALUATION,
    THROUGH_MODEL,
    THROUGH_STAGING,
    WEAK_MODEL,
    checks,
    materialize,
    materialized,
    registry,
    step_error,
)
from churn_platform_tests.postgres import free_port


@contextmanager
def mlflow_server(store_uri: str, workdir: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 over ``store_uri``; yields its URL, stops it after."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"  # mlflow server runs a bare uvicorn
    log = (workdir / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (workdir / "mlflow-server.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not become healthy in 90 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def source_file(churn_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the file source at a frame the test writes; servers a test's staging step
    started are stopped however it ends (they outlived the test before)."""

    def use(frame: pd.DataFrame) -> Path:
        path = churn_home / "snapshot.parquet"
        frame.to_parquet(path, index=False)
        monkeypatch.setenv("CHURN_SOURCE", "file")
        monkeypatch.setenv("CHURN_SOURCE_PATH", str(path))
        return path

    yield use
    LocalProcessTarget(churn_home / "deployments").stop_all()


def test_model_where_annual_churns_more_fails_invariance_and_is_not_promoted(source_file):
    source_file(generate(SyntheticSpec(n_rows=20_000, seed=12, invert_contract_effect=True)))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(
        THROUGH_EVALUATION,
        instance,
        {"challenger_model": {"config": {**FAST_MODEL, "min_slice_auc": 0.0}}},
    )
    assert not result.success
    invariance = checks(result)[("challenger_model", "contract_invariance")]
    assert not invariance.passed
    fraction = invariance.metadata["fraction_lowered"].value
    assert fraction < 0.5 and invariance.metadata["threshold"].value == 0.9
    assert "contract_invariance" in step_error(result)
    assert "evaluation_report" not in materialized(result)
    reg = registry()
    assert reg.aliases() == {}  # registered, but neither challenger nor champion
    assert reg.version_info("1").tags["model_checks"] == "failed"


def test_training_row_cap_is_in_the_mlflow_run_and_the_asset_metadata(source_file, churn_home):
    source_file(generate(SyntheticSpec(n_rows=20_000, seed=13)))
    instance = dg.DagsterInstance.ephemeral()
    config = {**FAST_MODEL, "max_training_rows": 5_000}
    result = materialize(THROUGH_MODEL, instance, {"challenger_model": {"config": config}})
    assert result.success, step_error(result)
    reg = registry()
    run = reg.client().get_run(reg.version_info("1").run_id)
    assert run.data.params["max_training_rows"] == "5000"
    assert run.data.params["early_stopping"] == "auto"
    assert run.data.metrics["n_train_rows"] == 5_000
    holdout_rows = (
        instance.get_latest_materialization_event(dg.AssetKey("holdout_set"))
        .asset_materialization.metadata["rows"]
        .value
    )
    assert run.data.metrics["n_available_rows"] == 20_000 - holdout_rows
    model = instance.get_latest_materialization_event(
        dg.AssetKey("challenger_model")
    ).asset_materialization.metadata
    assert model["max_training_rows"].value == 5_000 and model["n_train_rows"].value == 5_000
    assert model["n_available_rows"].value == 20_000 - holdout_rows
    # the checks still score every holdout row
    auc = checks(result)[("challenger_model", "holdout_auc")].metadata
    assert auc["n_rows"].value == holdout_rows


def test_registered_model_has_lineage_and_reloads_identically_in_a_fresh_process(
    source_file, churn_home
):
    frame = generate(SyntheticSpec(n_rows=20_000, seed=13))
    source_file(frame)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(THROUGH_MODEL, instance, {"challenger_model": {"config": FAST_MODEL}})
    assert result.success, step_error(result)
    reg = registry()
    version = reg.version_info("1")
    run = reg.client().get_run(version.run_id)
    snapshot = instance.get_latest_materialization_event(
        dg.AssetKey("churn_snapshot")
    ).asset_materialization
    assert run.data.tags["data_version"] == snapshot.metadata["data_version"].value
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert len(run.data.tags["git_commit"]) in (40, len("unknown"))
    assert run.data.params["estimator"] == "hist_gradient_boosting"
    auc = checks(result)[("challenger_model", "holdout_auc")].metadata
    assert auc["auc_ci_lower"].value < auc["auc"].value < auc["auc_ci_upper"].value
    assert run.data.metrics["holdout_auc"] == pytest.approx(auc["auc"].value)
    assert reg.alias_version("challenger") == "1"
    profile = reg.load_json_artifact(version.run_id, "reference_profile.json")
    assert set(profile["features"]) >= {s.MONTHLY_SPEND, s.CONTRACT_TYPE}
    # the CBPE calibrator travels with the version, fitted on its holdout
    calibrator = reg.calibrator_of_version("1")
    assert calibrator is not None
    assert calibrator.n_fit == len(read_value(churn_home / "storage" / "holdout_set"))
    assert np.all(np.diff(calibrator.apply(np.linspace(0, 1, 11))) >= 0)

    # What the MLflow UI shows comes from the tracking server's REST API: serve this store.
    with mlflow_server(reg.uri(), churn_home) as api:
        got = httpx.get(
            f"{api}/api/2.0/mlflow/registered-models/get", params={"name": "churn_model"}
        )
        assert got.status_code == 200, got.text
        aliases = {a["alias"]: a["version"] for a in got.json()["registered_model"]["aliases"]}
        assert aliases == {"challenger": "1"}
        run_json = httpx.get(
            f"{api}/api/2.0/mlflow/runs/get", params={"run_id": version.run_id}
        ).json()
        tags = {t["key"]: t["value"] for t in run_json["run"]["data"]["tags"]}
        assert tags["data_version"] == snapshot.metadata["data_version"].value

    # The same data, config and seed give the same model: retrain here, compare with a fresh
    # process that loads the registered version by alias.
    week = result.dagster_run.tags["dagster/partition"]  # the weekly data's partition
    validated = read_value(churn_home / "storage" / "validated_churn_data" / week)
    test_rows = read_value(churn_home / "storage" / "holdout_set")
    train_rows = validated[~validated[s.CUSTOMER_ID].isin(set(test_rows[s.CUSTOMER_ID]))]
    here = training.predict_proba(
        training.train(train_rows, training.TrainingConfig(), default_spec()).pipeline, test_rows
    )
    rows = churn_home / "rows.parquet"
    test_rows.to_parquet(rows)
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        "from churn_platform.core.training import predict_proba\n"
        f"mlflow.set_tracking_uri({reg.uri()!r})\n"
        "m = mlflow.sklearn.load_model('models:/churn_model@challenger')\n"
        f"print(json.dumps(predict_proba(m, pd.read_parquet({str(rows)!r})).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_array_equal(fresh, here)


def test_gate_keeps_an_equal_challenger_and_promotes_a_clearly_better_one(source_file):
    source_file(generate(SyntheticSpec(n_rows=20_000, seed=14)))
    instance = dg.DagsterInstance.ephemeral()
    first = materialize(
        THROUGH_EVALUATION,
        instance,
        {"challenger_model": {"config": WEAK_MODEL}, "evaluation_report": {"config": FAST_GATE}},
    )
    assert first.success, step_error(first)
    reg = registry()
    reg.set_alias("champion", "1")  # as if v1 had been rolled out

    better = materialize(
        THROUGH_EVALUATION,
        instance,
        {"challenger_model": {"config": FAST_MODEL}, "evaluation_report": {"config": FAST_GATE}},
    )
    assert better.success, step_error(better)
    report = better.output_for_node("evaluation_report")
    assert report.promote is True and report.champion_version == "1"
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("evaluation_report")
    ).asset_materialization.metadata
    assert meta["auc_delta_ci_lower"].value >= 0.005
    assert "data:image/png;base64," in meta["report"].value  # ROC and calibration plots inline
    assert "95% CI" in meta["report"].value

    reg.set_alias("champion", "2")
    same = materialize(
        THROUGH_STAGING,
        instance,
        {"challenger_model": {"config": FAST_MODEL}, "evaluation_report": {"config": FAST_GATE}},
    )
    # "challenger lost" is a normal outcome: the run succeeds and deployment does nothing
    assert same.success, step_error(same)
    kept = same.output_for_node("evaluation_report")
    assert kept.promote is False and "keep" in kept.reason.lower()
    gate = checks(same)[("evaluation_report", "promotion_gate")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert same.output_for_node("staging_deployment").action == "none"
    assert reg.alias_version("champion") == "2"
