"""The challenger model of one model configuration: trained, logged and registered in MLflow,
then checked. ``build(model)`` makes the asset."""

import hashlib
import inspect
from types import ModuleType

import dagster as dg
import pandas as pd

from churn_platform import settings
from churn_platform.config import ModelConfig
from churn_platform.core import contract, features, model_checks, model_step, schema, training
from churn_platform.core import records as r
from churn_platform.core.spec import Spec
from churn_platform.defs import week_runs
from churn_platform.defs.common import (
    asset_args,
    asset_key,
    check_result,
    check_specs,
    config_from,
    model_resource,
    model_resource_keys,
    upstream_metadata,
)
from churn_platform.resources.k8s_training import training_op_tags
from churn_platform.resources.mlflow_registry import MlflowRegistry

ASSET = "challenger_model"


def model_check_descriptions(spec: Spec) -> dict[str, str]:
    """Check name -> description, in run order: one invariance check per spec invariance
    (``core.model_checks.check_descriptions``).

    An invariance named like another model check is refused with the fix: Dagster would
    see two checks of one name.
    """
    try:
        return model_checks.check_descriptions(spec)
    except ValueError as exc:
        raise settings.SettingsError(str(exc)) from exc


# The code whose change makes a trained model stale: feature code, training, the model checks,
# the canonical schema and the data contract's declaration (and the spec, below).
CODE_MODULES: tuple[ModuleType, ...] = (features, training, model_checks, schema, contract)


def training_code_version(spec: Spec, modules: tuple[ModuleType, ...] = CODE_MODULES) -> str:
    """A short hash of the source of ``modules`` and of ``spec``: equal code and spec give an
    equal version, any edit (even a comment) or another spec a new one, so Dagster marks
    ``challenger_model`` stale and the ``code_version_sensor`` retrains once."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    digest.update(b"spec:" + spec.hash.encode())
    return digest.hexdigest()[:16]


class ChallengerConfig(config_from(training.TrainingConfig, model_checks.ModelCheckConfig)):  # type: ignore[misc]
    """Estimator, hyperparameters and model-check thresholds for one training run.

    The fields are ``core.training.TrainingConfig``'s and ``core.model_checks.ModelCheckConfig``'s;
    ``seed`` seeds both the estimator and the checks' bootstrap.
    """


def build(model: ModelConfig) -> list[dg.AssetsDefinition]:
    """``model``'s ``challenger_model`` asset, its checks named from its spec."""
    checks = model_check_descriptions(model.spec)

    @dg.asset(
        **asset_args(model, ASSET, "holdout_set"),
        deps=[asset_key(model, week_runs.VALIDATED_ASSET)],
        kinds={"scikitlearn", "mlflow"},
        code_version=training_code_version(model.spec),
        op_tags=training_op_tags(cpu="2", memory="4Gi"),  # its own pod size under k8s_job_executor
        check_specs=check_specs(model, ASSET, checks),
        required_resource_keys={
            "code_version",
            "io_manager",
            *model_resource_keys(model, "mlflow_registry"),
        },
    )
    def challenger_model(
        context: dg.AssetExecutionContext, config: ChallengerConfig, holdout_set: pd.DataFrame
    ):
        """A scikit-learn pipeline (feature code + estimator) trained on the non-holdout rows.

        Trains on `CHURN_TRAINING_WEEKS` recent validated weeks ending at the run's week
        (the run's partition; the newest validated week when the run has none), stacked
        (metadata `training_weeks`); a customer in the holdout is never trained on, in any
        week. The data version is the week's own, or a hash of each week's.

        The features, slices, invariances and thresholds come from the model's spec.
        Logged to MLflow with its parameters, metrics, signature (the spec's features),
        input example, pinned requirements, the spec itself (the model carries it; tag
        `spec_hash`), the snapshot's data version, the git commit, the Dagster run id and
        the drift reference profile, then registered as a new version of the model's
        registered model (`churn_model` by default). The model checks run on the fixed
        holdout; the alias `challenger` moves to the new version only when every one
        passed. A failed check leaves the version registered (tagged
        `model_checks=failed`) without the alias, and stops the run here.
        """
        train_cfg = config.to_core(training.TrainingConfig)
        held_out = holdout_set[model.spec.id_column]
        frame, weeks, version, available = week_runs.training_frame(
            context, model, held_out, train_cfg.max_training_rows, train_cfg.seed
        )
        window = (weeks, version, available)
        yield from _train(context, config, model, frame, holdout_set, window)

    return [challenger_model]


def _train(
    context: dg.AssetExecutionContext,
    config: ChallengerConfig,
    model: ModelConfig,
    validated_churn_data: pd.DataFrame,
    holdout_set: pd.DataFrame,
    window: tuple[list[str], str, int | None],
):
    spec = model.spec
    weeks, data_version, available = window
    mlflow_registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    train_cfg: training.TrainingConfig = config.to_core(training.TrainingConfig)
    check_cfg = config.to_core(model_checks.ModelCheckConfig).resolved(spec)
    checked = model_step.counted_available(
        model_checks.train_and_check(validated_churn_data, holdout_set, train_cfg, check_cfg, spec),
        available,
    )
    context.log.info(model_step.fit_summary(train_cfg, checked))
    lineage = model_step.Lineage(
        data_version=data_version,
        holdout_hash=upstream_metadata(context, asset_key(model, "holdout_set"), "holdout_hash")
        or "unknown",
        git_commit=context.resources.code_version.git_commit(),
        run_id=context.run.run_id,
    )
    registered = mlflow_registry.log_and_register(
        **model_step.registration(checked, train_cfg, check_cfg, spec, lineage).as_kwargs()
    )
    if not checked.failed:
        mlflow_registry.set_alias(r.CHALLENGER, registered.version)
    for outcome in checked.outcomes:
        yield check_result(outcome, asset_key(model, ASSET))
    if checked.failed:
        raise dg.Failure(
            description=model_step.failure_text(
                registered.version, checked.failed, checked.outcomes
            ),
            metadata={
                "model_version": registered.version,
                "failed_checks": ", ".join(checked.failed),
            },
        )
    value = model_step.challenger(registered, checked, train_cfg, lineage)
    yield dg.Output(
        value,
        metadata={
            **_model_metadata(value, mlflow_registry, train_cfg.estimator, spec),
            "training_weeks": ", ".join(weeks),
        },
    )


def _model_metadata(
    model: r.ChallengerModel, registry: MlflowRegistry, estimator: str, spec: Spec
) -> dict:
    """What the UI shows of a registered challenger, with links to its run and version."""
    return {
        **model_step.model_metadata(model, estimator, spec),
        "mlflow_run": dg.MetadataValue.url(registry.run_url(model.experiment_id, model.run_id)),
        "mlflow_version": dg.MetadataValue.url(registry.version_url(model.version)),
        "tracking_uri": registry.uri(),
    }
