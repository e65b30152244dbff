"""The served model's quality where a person looks first: the run summary
(``python -m churn_platform run``) and ``python -m churn_platform.serving status`` show the
champion's holdout AUC and its interval, read from the registered version's run metrics."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

from churn_platform import cli
from churn_platform.resources.mlflow_registry import _fluent_store
from churn_platform.serving.__main__ import main as serving_main
from churn_platform.targets.local import LocalProcessTarget
from churn_platform_tests.pipeline import resource

METRICS = {"holdout_auc": 0.84412, "holdout_auc_ci_lower": 0.82221, "holdout_auc_ci_upper": 0.86583}


def register(metrics: dict[str, float]) -> str:
    """A tiny model registered in the home's MLflow store with ``metrics`` in its run."""
    registry = resource("mlflow_registry")
    x = np.arange(40, dtype=float).reshape(-1, 1)
    with _fluent_store(registry.uri()), mlflow.start_run(experiment_id=registry.experiment_id()):
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, x[:, 0] > 20),
            name="model",
            serialization_format="cloudpickle",
        )
    with _fluent_store(registry.uri()):
        return str(mlflow.register_model(info.model_uri, registry.model_name).version)


def test_status_and_summary_show_the_champions_holdout_auc_and_interval(churn_home: Path, capsys):
    registry = resource("mlflow_registry")
    registry.set_alias("champion", register(METRICS))
    state = churn_home / "deployments"

    assert serving_main(["status", "--state-dir", str(state)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["champion"] == {
        "version": "1",
        "holdout_auc": 0.8441,
        "holdout_auc_interval": [0.8222, 0.8658],
    }

    result = SimpleNamespace(success=True, all_events=[])
    lines = cli.summary(result, registry, LocalProcessTarget(state, registry.uri()), "r1")
    assert "champion v1: holdout AUC 0.8441, interval [0.8222, 0.8658]" in lines

    # a version registered without them (by hand): said, not a crash
    registry.set_alias("champion", register({"train_auc": 0.9}))
    assert serving_main(["status", "--state-dir", str(state)]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] == {
        "version": "2",
        "error": "no holdout AUC logged",
    }
    lines = cli.summary(result, registry, LocalProcessTarget(state, registry.uri()), "r2")
    assert "champion v2: no holdout AUC logged with this version" in lines
