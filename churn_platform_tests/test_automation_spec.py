"""The PSI drift sensor on a champion trained with a spec of another shape.

A real MLflow SQLite store holds a champion whose MLmodel metadata carries its own spec
(no column of the example table) and whose run holds the reference profile built with
that spec. Its served requests (the model server's own inference-log writer) drift on a
column that was constant (all zeros) in training: the sensor computes PSI over that spec's
drift features and fires on it. The synthetic source lacks the champion's features, so that
window is skipped by name instead of crashing the tick.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from churn_platform import settings
from churn_platform.config import load_config
from churn_platform.core import drift
from churn_platform.core.mapping import apply_mapping
from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, parse_spec
from churn_platform.definitions import build_definitions
from churn_platform.defs.automation import PROFILE_ARTIFACT
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.mlflow_registry import _fluent_store
from churn_platform.resources.notify import Notifier
from churn_platform.serving.inference_log import InferenceLog, default_inference_log_path
from churn_platform.serving.server_settings import ServerSettings
from churn_platform_tests.pipeline import resource, sensor

SPEC = parse_spec(
    {
        "entity_id": {"column": "account"},
        "target": {"column": "left", "positive": ["yes"], "negative": ["no"]},
        "features": {
            "seats": {"kind": "integer"},
            "plan": {"kind": "categorical", "allowed": ["basic", "pro"]},
            "api_calls": {"kind": "numeric"},
            "notes": {"kind": "numeric", "drift": False},
        },
    }
)


def frame(n: int, seed: int, api_calls: np.ndarray | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "seats": rng.choice([0, 1, 2], n, p=[0.5, 0.3, 0.2]),
            "plan": rng.choice(["basic", "pro"], n),
            "api_calls": np.zeros(n) if api_calls is None else api_calls,
            "notes": rng.normal(size=n),
        }
    )


def register_champion(train: pd.DataFrame, spec: Spec = SPEC) -> str:
    """Log a model with ``spec`` in its metadata and the ``spec`` profile of ``train`` (its
    columns mapped) in its run; alias champion."""
    registry = resource("mlflow_registry")
    profile = drift.build_reference_profile(train, spec)
    with (
        _fluent_store(registry.uri()),
        mlflow.start_run(experiment_id=registry.experiment_id()),
        tempfile.TemporaryDirectory() as tmp,
    ):
        path = Path(tmp) / PROFILE_ARTIFACT
        path.write_text(json.dumps(profile))
        mlflow.log_artifact(str(path))
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(train.iloc[:, :1], np.arange(len(train)) % 2),
            name="model",
            metadata={MODEL_METADATA_KEY: spec.to_dict()},
            serialization_format="cloudpickle",
        )
    with _fluent_store(registry.uri()):
        version = str(mlflow.register_model(info.model_uri, registry.model_name).version)
    registry.set_alias("champion", version)
    return version


def log_requests(version: str, rows: pd.DataFrame) -> None:
    path = default_inference_log_path(version, ServerSettings(home=settings.churn_home()))
    log = InferenceLog(path, version, flush_records=100_000)
    records = rows.to_dict(orient="records")
    log.append(records, [0.5] * len(records))
    log.flush()


def tick(data_source: Any = None) -> Any:
    """One tick of the default model's drift sensor (default source: 2,000 synthetic rows)."""
    context = dg.build_sensor_context(
        definitions=build_definitions(),
        resources={
            "mlflow_registry": resource("mlflow_registry"),
            "data_source": data_source or SyntheticSourceResource(n_rows=2_000, seed=7),
            "inference_log": resource("inference_log"),
            "notifier": Notifier(),
            "storage": resource("storage"),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    return sensor("psi_drift_sensor").evaluate_tick(context)


def test_the_sensor_watches_the_champions_spec_features(churn_home):
    version = register_champion(frame(3_000, seed=1))
    log_requests(version, frame(1_000, seed=2))

    calm = tick()
    assert calm.run_requests == []
    # the source is read through the champion's own spec: a table without its columns is
    # unreadable for it (said, with the column), and the served requests are judged instead
    assert "skipped source_snapshot: unreadable" in (calm.skip_message or "")
    observed = [e for e in calm.asset_events if e.metadata["drift_window"].value == "inference_log"]
    meta = {k: v.value for k, v in observed[0].metadata.items()}
    # every drift feature of the champion's spec, and only those (notes has drift: false)
    assert {k for k in meta if k.startswith("psi_")} == {"psi_seats", "psi_plan", "psi_api_calls"}
    assert meta["max_psi"] < 0.05

    # api_calls was all zeros in training; requests now carry real values
    busy = frame(1_000, seed=3, api_calls=np.random.default_rng(4).exponential(50, 1_000))
    log_requests(version, busy)
    fired = tick()
    assert [r.run_key for r in fired.run_requests] == ["drift-episode-1"]
    assert fired.run_requests[0].tags["churn/drift_feature"] == "api_calls"
    assert fired.run_requests[0].tags["churn/drift_window"] == "inference_log"


BANK = {
    "entity_id": {"column": "customer_id", "source": "CustomerId"},
    "target": {"column": "exited", "source": "Exited", "positive": [1], "negative": [0]},
    "features": {
        "creditscore": {"kind": "integer", "source": "CreditScore"},
        "estimatedsalary": {"kind": "numeric", "source": "EstimatedSalary"},
    },
}


def bank_rows(n: int, seed: int, salary_factor: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "CustomerId": np.arange(n) + 15_600_000,
            "CreditScore": rng.integers(350, 851, n),
            "EstimatedSalary": rng.uniform(10_000, 200_000, n) * salary_factor,
            "Exited": rng.choice([0, 1], n, p=[0.8, 0.2]),
        }
    )


def test_after_a_spec_change_the_sensor_still_watches_the_champions_dropped_feature(
    churn_home, tmp_path, monkeypatch
):
    """The champion was trained on a spec with ``estimatedsalary``; the current spec dropped
    it; the source file now holds it x3: the sensor maps the file through the champion's
    spec and sees the drift (it once scored 0.000, "lacks champion drift feature(s)")."""
    champion_spec = parse_spec(BANK)
    current = {**BANK, "features": {"creditscore": BANK["features"]["creditscore"]}}
    (tmp_path / "current.yaml").write_text(json.dumps(current))
    source = tmp_path / "bank.csv"
    bank_rows(2_000, seed=2, salary_factor=3.0).to_csv(source, index=False)
    for name, value in (
        ("CHURN_SPEC", str(tmp_path / "current.yaml")),
        ("CHURN_SOURCE", "file"),
        ("CHURN_SOURCE_PATH", str(source)),
    ):
        monkeypatch.setenv(name, value)
    assert "estimatedsalary" not in load_config().model().spec.features
    train = apply_mapping(bank_rows(3_000, seed=1), required=(), spec=champion_spec).frame
    register_champion(train, champion_spec)

    fired = tick(resource("data_source"))
    window = [
        e for e in fired.asset_events if e.metadata["drift_window"].value == "source_snapshot"
    ]
    psi = {k: v.value for k, v in window[0].metadata.items() if k.startswith("psi_")}
    assert psi["psi_estimatedsalary"] > 2.0, psi  # the table scored 6.62
    assert psi["psi_creditscore"] < 0.1, psi
    assert [r.tags["churn/drift_feature"] for r in fired.run_requests] == ["estimatedsalary"]
