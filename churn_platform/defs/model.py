"""The challenger model: trained, logged and registered in MLflow, then checked."""

from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core import drift, model_checks, training
from churn_platform.core import schema as s
from churn_platform.core.metrics import auc
from churn_platform.defs.common import (
    GROUP,
    OWNERS,
    check_result,
    failed_names,
    git_commit,
    upstream_metadata,
)
from churn_platform.resources.k8s_training import training_op_tags
from churn_platform.resources.mlflow_registry import MlflowRegistry

ASSET = "challenger_model"
MODEL_CHECKS = {
    "feature_invariants": "Layer 1 on real data: encoded features in range, no NaN or inf.",
    "holdout_auc": "Holdout AUC with a 95% bootstrap interval clears the bound.",
    "slice_auc": "AUC on enterprise, each contract type and tenure bands clears the bound.",
    "contract_invariance": "Monthly -> annual contract lowers predicted churn for most rows.",
    "prediction_coverage": "Every holdout row gets a finite probability in [0, 1].",
}


class ChallengerConfig(dg.Config):
    """Estimator, hyperparameters and model-check thresholds for one training run."""

    estimator: str = "hist_gradient_boosting"
    seed: int = 42
    learning_rate: float = 0.05
    max_iter: int = 200
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 80
    l2_regularization: float = 1.0
    c: float = 1.0
    min_auc: float = 0.80
    auc_pass_on: str = "lower"
    min_slice_auc: float = 0.74
    min_slice_rows: int = 30
    min_invariance_fraction: float = 0.90
    n_resamples: int = 1000

    def training_config(self) -> training.TrainingConfig:
        """The core training config (validated there)."""
        return training.TrainingConfig(
            estimator=self.estimator,
            seed=self.seed,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            c=self.c,
        )

    def check_config(self) -> model_checks.ModelCheckConfig:
        """The core model-check thresholds (validated there)."""
        return model_checks.ModelCheckConfig(
            min_auc=self.min_auc,
            auc_pass_on=self.auc_pass_on,
            min_slice_auc=self.min_slice_auc,
            min_slice_rows=self.min_slice_rows,
            min_invariance_fraction=self.min_invariance_fraction,
            n_resamples=self.n_resamples,
            seed=self.seed,
        )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"scikitlearn", "mlflow"},
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
    validated_churn_data: pd.DataFrame,
    holdout_set: pd.DataFrame,
):
    """A scikit-learn pipeline (feature code + estimator) trained on the non-holdout rows.

    Logged to MLflow with its parameters, metrics, signature, input example, pinned
    requirements, the snapshot's data version, the git commit, the Dagster run id and
    the drift reference profile, then registered as a new version of `churn_model`.
    The model checks run on the fixed holdout; the alias `challenger` moves to the new
    version only when every one passed. A failed check leaves the version registered
    (tagged `model_checks=failed`) without the alias, and stops the run here.
    """
    train_cfg, check_cfg = config.training_config(), config.check_config()
    holdout_ids = set(holdout_set[s.CUSTOMER_ID])
    train_rows = validated_churn_data[~validated_churn_data[s.CUSTOMER_ID].isin(holdout_ids)]
    trained = training.train(train_rows, train_cfg)
    context.log.info(
        f"fitted {train_cfg.estimator} on {trained.n_train_rows} rows in {trained.fit_seconds:.1f}s"
    )

    outcomes = model_checks.run_model_checks(trained.pipeline, holdout_set, check_cfg)
    by_name = {o.name: o for o in outcomes}
    failed = failed_names(outcomes)
    holdout_auc = by_name["holdout_auc"].metadata
    train_auc = auc(
        train_rows[s.TARGET].astype(int).to_numpy(),
        training.predict_proba(trained.pipeline, train_rows),
    )
    data_version = upstream_metadata(context, "validated_churn_data", "data_version") or "unknown"
    holdout_hash = upstream_metadata(context, "holdout_set", "holdout_hash") or "unknown"
    tags = {
        "data_version": data_version,
        "holdout_hash": holdout_hash,
        "git_commit": git_commit(),
        "dagster_run_id": context.run.run_id,
        "model_checks": "passed" if not failed else "failed",
    }
    metrics: dict[str, float] = {
        "holdout_auc": holdout_auc["auc"],
        "holdout_auc_ci_lower": holdout_auc["auc_ci_lower"],
        "holdout_auc_ci_upper": holdout_auc["auc_ci_upper"],
        "train_auc": train_auc,
        "invariance_fraction": by_name["contract_invariance"].metadata["fraction_lowered"],
        "fit_seconds": trained.fit_seconds,
        "n_train_rows": trained.n_train_rows,
    }
    profile = drift.build_reference_profile(train_rows)
    registered = mlflow_registry.log_and_register(
        trained.pipeline,
        input_example=training.model_inputs(train_rows),
        params={**train_cfg.params(), **{f"check_{k}": v for k, v in check_cfg.__dict__.items()}},
        metrics=metrics,
        tags=tags,
        json_artifacts={
            "reference_profile.json": profile,
            "model_checks.json": [
                {"name": o.name, "passed": o.passed, "description": o.description, **o.metadata}
                for o in outcomes
            ],
        },
        run_name=f"challenger-{context.run.run_id[:8]}",
    )
    if not failed:
        mlflow_registry.set_alias("challenger", registered.version)

    for outcome in outcomes:
        yield check_result(outcome, ASSET)
    if failed:
        raise dg.Failure(
            description=(
                f"model version {registered.version} failed check(s) {', '.join(failed)}; it stays registered "
                "without the 'challenger' alias and is not evaluated for promotion. "
                + " | ".join(by_name[n].description for n in failed)
            ),
            metadata={"model_version": registered.version, "failed_checks": ", ".join(failed)},
        )
    value: dict[str, Any] = {
        "model_name": registered.name,
        "version": registered.version,
        "model_uri": registered.model_uri,
        "run_id": registered.run_id,
        "experiment_id": registered.experiment_id,
        "data_version": data_version,
        "holdout_hash": holdout_hash,
        "metrics": metrics,
        "checks_passed": True,
        "params": train_cfg.params(),
    }
    yield dg.Output(
        value,
        metadata={
            "model_version": registered.version,
            "model_uri": registered.model_uri,
            "estimator": train_cfg.estimator,
            "holdout_auc": metrics["holdout_auc"],
            "holdout_auc_ci": f"{metrics['holdout_auc_ci_lower']:.4f} - {metrics['holdout_auc_ci_upper']:.4f}",
            "train_auc": round(train_auc, 5),
            "n_train_rows": trained.n_train_rows,
            "fit_seconds": round(trained.fit_seconds, 2),
            "data_version": data_version,
            "mlflow_run": dg.MetadataValue.url(
                mlflow_registry.run_url(registered.experiment_id, registered.run_id)
            ),
            "mlflow_version": dg.MetadataValue.url(mlflow_registry.version_url(registered.version)),
            "tracking_uri": mlflow_registry.uri(),
        },
    )
