"""``model_performance`` and ``performance_sensor`` through Dagster, against a real MLflow
SQLite store, a real inference log in the servers' format and the synthetic world's outcomes.

A champion is registered as ``challenger_model`` registers one (holdout AUC metric, the CBPE
calibrator fitted on its holdout); its servers' log holds a week of predictions for the
customers the synthetic source drew that week. The concept-drift scenario turns the world's
mechanism around without moving a feature: PSI stays quiet, the realized check fails and
the performance sensor asks for one retraining run per episode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn_platform import settings
from churn_platform.config import load_config
from churn_platform.core import cbpe, drift, scores, training
from churn_platform.core import performance as perf
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate, week_start
from churn_platform.definitions import build_definitions
from churn_platform.defs import after_release
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.notify import Notifier
from churn_platform.resources.outcome_source import OutcomeSourceResource
from churn_platform.serving.inference_log import default_inference_log_path
from churn_platform.serving.integration import records
from churn_platform.serving.server_settings import ServerSettings
from churn_platform_tests.http_receiver import Receiver
from churn_platform_tests.pipeline import resource, sensor

WORLD = {"n_rows": 4_000, "seed": 7}
WEEK = week_start(2)  # 2026-11-15, a Sunday
START, END = perf.week_bounds(WEEK)
MATURE = (pd.Timestamp(WEEK) + pd.Timedelta(days=7 + 30)).date().isoformat()
PENDING = (pd.Timestamp(WEEK) + pd.Timedelta(days=20)).date().isoformat()


@pytest.fixture
def home(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("CHURN_PSI_THRESHOLD", "CHURN_INFERENCE_LOG", "CHURN_SYNTHETIC_ROWS"):
        monkeypatch.delenv(var, raising=False)
    for var in [s.name for s in settings.SETTINGS if s.name.startswith("CHURN_PERFORMANCE_")]:
        monkeypatch.delenv(var, raising=False)
    return churn_home


@pytest.fixture
def champion(home: Path) -> dict[str, Any]:
    """Version 1: trained on week-0 customers, its holdout AUC and calibrator logged."""
    spec = default_spec()
    train_rows = generate(SyntheticSpec(n_rows=6_000, seed=3))
    holdout = generate(SyntheticSpec(n_rows=4_000, seed=5))
    trained = training.train(train_rows, training.TrainingConfig(max_iter=60), spec)
    scores = training.predict_proba(trained.pipeline, holdout)
    calibrator = cbpe.fit_calibrator(holdout["churned"], scores)
    registry = resource("mlflow_registry")
    registered = registry.log_and_register(
        trained.pipeline,
        input_example=training.model_inputs(train_rows, spec),
        params=trained.config.params(),
        metrics={"holdout_auc": roc_auc_score(holdout["churned"], scores)},
        tags={"origin": "test_model_performance"},
        json_artifacts={
            "reference_profile.json": drift.build_reference_profile(train_rows, spec),
            cbpe.CALIBRATOR_ARTIFACT: calibrator.to_dict(),
        },
        run_name="test-champion",
        spec=spec,
    )
    registry.set_alias("champion", registered.version)
    return {"version": registered.version, "pipeline": trained.pipeline}


def log_week(version: str, pipeline: Any) -> pd.DataFrame:
    """A week of the servers' log lines for the customers the synthetic source drew that
    week: each scored once or twice (the later score is the one judged)."""
    customers = generate(SyntheticSpec(**WORLD, as_of=WEEK))
    probability = training.predict_proba(pipeline, customers)
    rng = np.random.default_rng(1)
    ts = START + rng.integers(3600, END - START - 3600, size=len(customers))
    lines = []
    recs = records(customers, default_spec())
    for i, rec in enumerate(recs):
        base = {**rec, "entity_id": customers["customer_id"].iloc[i], "model_version": version}
        if i % 3 == 0:  # an earlier, different score of the same customer
            lines.append({**base, "request_id": f"early-{i}", "probability": 0.5, "ts": ts[i] - 60})
        lines.append(
            {**base, "request_id": f"r-{i}", "probability": float(probability[i]), "ts": int(ts[i])}
        )
    lines.append({**recs[0], "probability": 0.9, "model_version": version, "ts": int(ts[0])})
    path = default_inference_log_path(version, ServerSettings(home=settings.churn_home()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line, default=str) + "\n" for line in lines))
    return customers.assign(probability=probability)


def run_week(as_of: str, concept_drift: float | None = None) -> dg.ExecuteInJobResult:
    config = load_config()
    asset = after_release.build_asset(config.model(), config)
    resources = {
        **{k: resource(k) for k in ("storage", "mlflow_registry", "inference_log")},
        "data_source": SyntheticSourceResource(**WORLD),
        "outcome_source": OutcomeSourceResource(concept_drift=concept_drift),
    }
    return dg.materialize(
        [asset],
        partition_key=WEEK,
        resources=resources,
        run_config={"ops": {"model_performance": {"config": {"as_of": as_of}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def outcome_of(result: dg.ExecuteInJobResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata of the materialisation, check name -> (passed, description))."""
    assert result.success
    [mat] = result.asset_materializations_for_node("model_performance")
    meta = {k: v.value for k, v in mat.metadata.items()}
    checks = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            checks[data.check_name] = (data.passed, data.description)
    return meta, checks


def test_a_mature_week_is_scored_per_version_and_estimated(champion):
    served = log_week(champion["version"], champion["pipeline"])
    meta, checks = outcome_of(run_week(MATURE))
    assert meta["status"] == "scored"
    assert meta["predictions_logged"] == len(served) + len(served[::3]) + 1
    assert meta["predictions_without_entity_id"] == 1
    want = roc_auc_score(served["churned"], served["probability"])
    assert meta["realized_auc_v1"] == pytest.approx(want, abs=1e-5)
    assert abs(meta["estimated_auc_v1"] - want) < 0.03
    assert meta["estimate_error_v1"] == pytest.approx(meta["estimated_auc_v1"] - want, abs=1e-4)
    assert "concept drift" in meta["what_cbpe_cannot_see"]
    assert "tenure:0-12m" in meta["slices"] and "| 0.0-0.1 |" in meta["reliability"]
    assert "data:image/png;base64," in meta["reliability"]  # the reliability plot
    assert set(checks) == {
        "realized_auc_consistent",
        "calibration_within_bound",
        "match_rate_above_bound",
    }
    assert all(passed for passed, _ in checks.values()), checks
    exported = json.loads((settings.churn_home() / perf_export()).read_text())
    assert exported["versions"]["1"]["realized_week"] == WEEK


def test_the_weeks_batch_scores_join_their_outcomes_beside_the_served_ones(champion):
    served = log_week(champion["version"], champion["pipeline"])
    version = champion["version"]
    rng = np.random.default_rng(2)
    batch = np.clip(served["probability"] + rng.normal(0, 0.1, len(served)), 0, 1)
    identity = scores.ScoreIdentity(WEEK, version, "data", "spec", "run-1", "2026-11-15")
    table = scores.score_table(served["customer_id"], batch.to_numpy(), identity)
    path = settings.churn_home() / scores.scores_key("", WEEK)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path)
    meta, checks = outcome_of(run_week(MATURE))
    label = f"{version}{scores.BATCH_SUFFIX}"
    assert meta[f"realized_auc_v{label}"] == pytest.approx(
        roc_auc_score(served["churned"], batch), abs=1e-5
    )
    # the served predictions of the same version are measured apart, unchanged
    want = roc_auc_score(served["churned"], served["probability"])
    assert meta[f"realized_auc_v{version}"] == pytest.approx(want, abs=1e-5)
    assert label in meta["versions"]
    assert set(checks) == {
        "realized_auc_consistent",
        "calibration_within_bound",
        "match_rate_above_bound",
    }


def perf_export() -> str:
    return "monitoring/model_performance.json"


def test_an_immature_week_is_pending_with_only_the_estimate(champion):
    log_week(champion["version"], champion["pipeline"])
    meta, checks = outcome_of(run_week(PENDING))
    assert meta["status"] == "pending"
    assert "realized_auc_v1" not in meta and "estimated_auc_v1" in meta
    assert all(passed and "pending" in text for passed, text in checks.values())


def tick_performance(cursor: str | None, notifier: Notifier) -> Any:
    context = dg.build_sensor_context(
        definitions=build_definitions(),
        cursor=cursor,
        resources={
            "mlflow_registry": resource("mlflow_registry"),
            "notifier": notifier,
            "storage": resource("storage"),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    return sensor("performance_sensor").evaluate_tick(context)


def tick_psi() -> Any:
    context = dg.build_sensor_context(
        definitions=build_definitions(),
        resources={
            "mlflow_registry": resource("mlflow_registry"),
            "data_source": SyntheticSourceResource(**WORLD),
            "inference_log": resource("inference_log"),
            "notifier": Notifier(),
            "storage": resource("storage"),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    return sensor("psi_drift_sensor").evaluate_tick(context)


def test_concept_drift_psi_quiet_realized_check_fails_one_run_per_episode(
    champion, receiver: Receiver
):
    log_week(champion["version"], champion["pipeline"])
    notifier = Notifier(webhook_url=f"{receiver.url}/hook", ui_url="http://dagster.test")
    healthy = tick_performance(None, notifier)  # nothing measured yet
    assert healthy.run_requests == []

    meta, checks = outcome_of(run_week(MATURE, concept_drift=1.0))
    passed, text = checks["realized_auc_consistent"]
    assert not passed and "below holdout AUC" in text
    assert abs(meta["estimated_auc_v1"] - meta["realized_auc_v1"]) > 0.1  # CBPE is blind to it

    quiet = tick_psi()
    assert quiet.run_requests == [], quiet.skip_message  # the features did not move

    first = tick_performance(healthy.cursor, notifier)
    [request] = first.run_requests
    assert request.partition_key == "2026-11-01"  # the week a retraining run takes (synthetic)
    assert request.run_key == "performance-v1-episode-1"
    assert request.tags["churn/trigger"] == "performance"
    assert float(request.tags["churn/performance_auc"]) == pytest.approx(
        meta["realized_auc_v1"], abs=1e-4
    )
    assert request.tags["churn/performance_week"] == WEEK
    again = tick_performance(first.cursor, notifier)
    assert again.run_requests == [] and "already requested" in again.skip_message
    bodies = receiver.bodies()
    assert len(bodies) == 1 and "performance" in json.dumps(bodies[0])

    # the world recovers: the episode ends, and a new drop is a new episode
    outcome_of(run_week(MATURE))
    recovered = tick_performance(again.cursor, notifier)
    assert recovered.run_requests == []
    outcome_of(run_week(MATURE, concept_drift=1.0))
    second = tick_performance(recovered.cursor, notifier)
    assert [r.run_key for r in second.run_requests] == ["performance-v1-episode-2"]


def test_the_sensor_sits_beside_the_other_triggers(home):
    defs = build_definitions()
    names = {s.name for s in defs.sensors}
    assert {"psi_drift_sensor", "code_version_sensor", "new_file_sensor"} < names
    assert "performance_sensor" in names
    assert defs.get_sensor_def("performance_sensor").job_name == "churn_retraining"
