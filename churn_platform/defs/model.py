"""The challenger model: trained, logged and registered in MLflow, then checked."""

import hashlib
import inspect
from types import ModuleType

import dagster as dg
import pandas as pd

from churn_platform import settings
from churn_platform.core import contract, drift, features, model_checks, schema, training
from churn_platform.core import records as r
from churn_platform.core.spec import Spec
from churn_platform.defs.common import (
    GROUP,
    OWNERS,
    check_result,
    config_from,
    upstream_metadata,
)
from churn_platform.resources.code_version import CodeVersion
from churn_platform.resources.k8s_training import training_op_tags
from churn_platform.resources.mlflow_registry import MlflowRegistry

ASSET = "challenger_model"


def model_check_descriptions(spec: Spec) -> dict[str, str]:
    """Check name -> description, in run order: one invariance check per spec invariance.

    An invariance named like another model check is refused with the fix: Dagster would
    see two checks of one name.
    """
    fixed = {
        r.FEATURE_INVARIANTS: "Layer 1 on real data: encoded features in range, no NaN or inf.",
        r.HOLDOUT_AUC: "Holdout AUC with a 95% bootstrap interval clears the bound.",
        r.SLICE_AUC: (
            f"AUC on each slice of the spec ({', '.join(sl.name for sl in spec.slices) or 'none'})"
            " clears the bound."
        ),
    }
    invariances = {inv.name: model_checks.describe_invariance(inv) for inv in spec.invariances}
    clash = sorted(set(invariances) & {*fixed, r.PREDICTION_COVERAGE})
    if clash:
        raise settings.SettingsError(
            f"spec {spec.name!r}: invariance name(s) {clash} clash with the model check of that "
            "name; rename them in the spec's 'invariances'"
        )
    coverage = {r.PREDICTION_COVERAGE: "Every holdout row gets a finite probability in [0, 1]."}
    return {**fixed, **invariances, **coverage}


# the check names are fixed when definitions load; the asset refuses a spec whose checks differ
LOADED_SPEC = settings.current_spec()
MODEL_CHECKS = model_check_descriptions(LOADED_SPEC)


# The code whose change makes a trained model stale: feature code, training, the model checks,
# the canonical schema and the data contract's declaration (and the spec, below).
CODE_MODULES: tuple[ModuleType, ...] = (features, training, model_checks, schema, contract)


def training_code_version(
    modules: tuple[ModuleType, ...] = CODE_MODULES, spec: Spec | None = None
) -> str:
    """A short hash of the source of ``modules`` and of the spec (default: the current one):
    equal code and spec give an equal version, any edit (even a comment) or another spec a
    new one, so Dagster marks ``challenger_model`` stale and the ``code_version_sensor``
    retrains once."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    digest.update(b"spec:" + (spec or settings.current_spec()).hash.encode())
    return digest.hexdigest()[:16]


CODE_VERSION = training_code_version(spec=LOADED_SPEC)


class ChallengerConfig(config_from(training.TrainingConfig, model_checks.ModelCheckConfig)):  # type: ignore[misc]
    """Estimator, hyperparameters and model-check thresholds for one training run.

    The fields are ``core.training.TrainingConfig``'s and ``core.model_checks.ModelCheckConfig``'s;
    ``seed`` seeds both the estimator and the checks' bootstrap.
    """


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"scikitlearn", "mlflow"},
    code_version=CODE_VERSION,
    op_tags=training_op_tags(cpu="2", memory="4Gi"),  # its own pod size under k8s_job_executor
    check_specs=[
        dg.AssetCheckSpec(name, asset=ASSET, blocking=True, description=text)
        for name, text in MODEL_CHECKS.items()
    ],
)
def challenger_model(
    context: dg.AssetExecutionContext,
    config: ChallengerConfig,
    mlflow_registry: MlflowRegistry,
    code_version: CodeVersion,
    validated_churn_data: pd.DataFrame,
    holdout_set: pd.DataFrame,
):
    """A scikit-learn pipeline (feature code + estimator) trained on the non-holdout rows.

    The features, slices, invariances and thresholds come from the table spec
    (`CHURN_SPEC`; the shipped churn spec by default). Logged to MLflow with its
    parameters, metrics, signature (the spec's features), input example, pinned
    requirements, the spec itself (the model carries it; tag `spec_hash`), the
    snapshot's data version, the git commit, the Dagster run id and the drift reference
    profile, then registered as a new version of `churn_model`. The model checks run on
    the fixed holdout; the alias `challenger` moves to the new version only when every
    one passed. A failed check leaves the version registered (tagged
    `model_checks=failed`) without the alias, and stops the run here.
    """
    spec = settings.current_spec()
    if model_checks.check_names(spec) != list(MODEL_CHECKS):
        raise dg.Failure(
            description=(
                f"the spec's model checks {model_checks.check_names(spec)} differ from those "
                f"loaded with the definitions {list(MODEL_CHECKS)} (CHURN_SPEC changed since): "
                "reload the code location, then run again"
            )
        )
    train_cfg: training.TrainingConfig = config.to_core(training.TrainingConfig)
    check_cfg = config.to_core(model_checks.ModelCheckConfig).resolved(spec)
    checked = model_checks.train_and_check(
        validated_churn_data, holdout_set, train_cfg, check_cfg, spec
    )
    trained, outcomes, failed = checked.trained, checked.outcomes, checked.failed
    context.log.info(
        f"fitted {train_cfg.estimator} on {trained.n_train_rows} of {trained.n_available_rows} "
        f"training rows (cap {train_cfg.max_training_rows or 'none'}) in "
        f"{trained.fit_seconds:.1f}s"
    )
    data_version = upstream_metadata(context, "validated_churn_data", "data_version") or "unknown"
    holdout_hash = upstream_metadata(context, "holdout_set", "holdout_hash") or "unknown"
    registered = mlflow_registry.log_and_register(
        trained.pipeline,
        spec=spec,
        input_example=training.model_inputs(checked.train_rows, spec),
        params={
            **train_cfg.params(),
            **{f"check_{k}": v for k, v in check_cfg.__dict__.items() if v is not None},
        },
        metrics=checked.metrics,
        tags={
            "data_version": data_version,
            "holdout_hash": holdout_hash,
            "git_commit": code_version.git_commit(),
            "dagster_run_id": context.run.run_id,
            r.TAG_MODEL_CHECKS: "failed" if failed else "passed",
        },
        json_artifacts={
            "reference_profile.json": drift.build_reference_profile(
                checked.train_rows, settings.current_spec()
            ),
            "model_checks.json": [o.as_dict() for o in outcomes],
        },
        run_name=f"challenger-{context.run.run_id[:8]}",
    )
    if not failed:
        mlflow_registry.set_alias(r.CHALLENGER, registered.version)
    for outcome in outcomes:
        yield check_result(outcome, ASSET)
    if failed:
        raise dg.Failure(
            description=(
                f"model version {registered.version} failed check(s) {', '.join(failed)}; it stays "
                f"registered without the '{r.CHALLENGER}' alias and is not evaluated for promotion. "
                + " | ".join(o.description for o in outcomes if not o.passed)
            ),
            metadata={"model_version": registered.version, "failed_checks": ", ".join(failed)},
        )
    value = r.ChallengerModel(
        model_name=registered.name,
        version=registered.version,
        model_uri=registered.model_uri,
        run_id=registered.run_id,
        experiment_id=registered.experiment_id,
        data_version=data_version,
        holdout_hash=holdout_hash,
        metrics=checked.metrics,
        checks_passed=True,
        params=train_cfg.params(),
    )
    yield dg.Output(
        value, metadata=_model_metadata(value, mlflow_registry, train_cfg.estimator, spec)
    )


def _model_metadata(
    model: r.ChallengerModel, registry: MlflowRegistry, estimator: str, spec: Spec
) -> dict:
    """What the UI shows of a registered challenger."""
    m = model.metrics
    return {
        "model_version": model.version,
        "model_uri": model.model_uri,
        "estimator": estimator,
        "spec_hash": spec.short_hash,
        "spec_name": spec.name,
        "features": ", ".join(spec.feature_names),
        "holdout_auc": m["holdout_auc"],
        "holdout_auc_ci": f"{m['holdout_auc_ci_lower']:.4f} - {m['holdout_auc_ci_upper']:.4f}",
        "train_auc": round(m["train_auc"], 5),
        "n_train_rows": int(m["n_train_rows"]),
        "n_available_rows": int(m.get("n_available_rows", m["n_train_rows"])),
        "max_training_rows": int(model.params.get("max_training_rows") or 0),
        "n_iter": int(m["n_iter"]) if "n_iter" in m else "n/a",
        "fit_seconds": round(m["fit_seconds"], 2),
        "data_version": model.data_version,
        "mlflow_run": dg.MetadataValue.url(registry.run_url(model.experiment_id, model.run_id)),
        "mlflow_version": dg.MetadataValue.url(registry.version_url(model.version)),
        "tracking_uri": registry.uri(),
    }
