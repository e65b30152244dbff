"""Helpers to materialise the real asset graph in tests (real MLflow SQLite store, real files)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_platform.config import load_config
from churn_platform.core import training
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.definitions import build_definitions, model_assets
from churn_platform.defs.week_runs import week_to_run
from churn_platform.resources.environments import resources_for_environment
from churn_platform.resources.mlflow_registry import MlflowRegistry

ASSET_NAMES = [
    "churn_snapshot",
    "validated_churn_data",
    "holdout_set",
    "challenger_model",
    "evaluation_report",
    "staging_deployment",
    "production_deployment",
]
THROUGH_MODEL = ASSET_NAMES[:4]
THROUGH_EVALUATION = ASSET_NAMES[:5]
THROUGH_STAGING = ASSET_NAMES[:6]
FAST_MODEL = {"n_resamples": 300}
FAST_GATE = {"n_resamples": 300}
# a model that passes its checks only because the bounds are loose: the champion a better
# challenger then beats (or a faulty canary rolls back to)
WEAK_MODEL = {
    **FAST_MODEL,
    "max_iter": 4,
    "min_auc": 0.5,
    "min_slice_auc": 0.5,
    "min_invariance_fraction": 0.0,
}


WEEKLY = {"churn_snapshot", "validated_churn_data"}


def materialize(
    names: list[str],
    instance: dg.DagsterInstance,
    run_config: dict[str, Any] | None = None,
    week: str | None = None,
) -> dg.ExecuteInJobResult:
    """Materialise the named assets (others load from storage) with the environment's
    resources. A selection holding the weekly data runs partition ``week``, by default the
    one a run of the platform takes (``week_runs.week_to_run``: the synthetic world's next)."""
    return dg.materialize(
        assets(),
        selection=names,
        instance=instance,
        resources=resources_for_environment(),
        run_config={"ops": run_config or {}},
        raise_on_error=False,
        partition_key=run_week(instance, week) if WEEKLY & set(names) else None,
    )


def run_week(instance: dg.DagsterInstance, week: str | None = None) -> str:
    """``week``, or the week a run of the default model takes now on ``instance``."""
    return week or week_to_run(instance, load_config().model())


def release_graph(
    instance: dg.DagsterInstance, model: dict[str, Any], canary: dict[str, Any]
) -> dg.ExecuteInJobResult:
    """The whole graph, snapshot to production, with ``model`` and ``canary`` config; the run
    must succeed (its failing step is the assertion message)."""
    result = materialize(
        ASSET_NAMES,
        instance,
        {
            "challenger_model": {"config": model},
            "evaluation_report": {"config": FAST_GATE},
            "production_deployment": {"config": canary},
        },
    )
    assert result.success, step_error(result)
    return result


def checks(result: dg.ExecuteInJobResult) -> dict[tuple[str, str], Any]:
    """Every check evaluation of a run, keyed by (asset, check name)."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            out[(data.asset_key.to_user_string(), data.check_name)] = data
    return out


def materialized(result: dg.ExecuteInJobResult) -> set[str]:
    """Names of the assets a run materialised."""
    return {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def step_error(result: dg.ExecuteInJobResult) -> str:
    """The text of the first step failure ('' when none)."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            return event.event_specific_data.error.to_string()
    return ""


def registry() -> MlflowRegistry:
    """The registry resource of the current environment."""
    return resources_for_environment()["mlflow_registry"]


def resource(name: str) -> Any:
    """The platform's resource ``name`` as configured by the environment now."""
    return resources_for_environment()[name]


def assets() -> list[dg.AssetsDefinition]:
    """The default model's assets as the configuration builds them now (its spec, its keys)."""
    return model_assets(load_config().model())


def sensor(name: str) -> Any:
    """The platform's sensor ``name`` as the definitions build it now."""
    return build_definitions().get_sensor_def(name)


def release_champion(seed: int) -> str:
    """Register a small model trained on ``seed``'s rows and point ``champion`` at it."""
    spec = default_spec()
    rows = generate(SyntheticSpec(n_rows=1500, seed=seed))
    trained = training.train(rows, training.TrainingConfig(max_iter=15), spec)
    registry = resource("mlflow_registry")
    registered = registry.log_and_register(
        trained.pipeline,
        input_example=training.model_inputs(rows, spec),
        params=trained.config.params(),
        metrics={},
        tags={"origin": "churn_platform_tests"},
        json_artifacts={},
        run_name=f"champion-{seed}",
        spec=spec,
    )
    registry.set_alias("champion", registered.version)
    return registered.version
