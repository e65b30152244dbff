"""The ``challenger_model`` step's decisions and texts: what is logged with a trained model,
what its failure says, and the record handed to the gate.

The Dagster asset (``defs/model.py``) reads its config, trains through
``model_checks.train_and_check``, registers through the MLflow resource and turns these
results into check results, a failure or output metadata. Nothing here imports Dagster or
MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import pandas as pd

from churn_platform.core import cbpe, drift, model_checks, training
from churn_platform.core.model_checks import CheckedModel, CheckOutcome, ModelCheckConfig
from churn_platform.core.records import CHALLENGER, TAG_MODEL_CHECKS, ChallengerModel
from churn_platform.core.spec import Spec
from churn_platform.core.training import TrainingConfig


class Registered(Protocol):
    """A registered model version, as the registry reports it."""

    @property
    def name(self) -> str:
        """The registered model's name."""
        ...

    @property
    def version(self) -> str:
        """The new version."""
        ...

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``."""
        ...

    @property
    def run_id(self) -> str:
        """The run that logged it."""
        ...

    @property
    def experiment_id(self) -> str:
        """That run's experiment."""
        ...


@dataclass(frozen=True)
class Lineage:
    """Where a model came from: the data, the holdout, the code and the run."""

    data_version: str
    holdout_hash: str
    git_commit: str
    run_id: str  # the orchestrator's run


@dataclass(frozen=True)
class Registration:
    """Everything logged with a trained model (the registry's ``log_and_register`` arguments)."""

    pipeline: Any
    spec: Spec
    input_example: pd.DataFrame
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    json_artifacts: dict[str, Any]
    run_name: str

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (no copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def checks_changed(spec: Spec, loaded: Sequence[str]) -> str | None:
    """Why a run must stop when ``spec``'s model checks differ from the ``loaded`` ones
    (the asset's check names, fixed when the definitions loaded); None when they agree."""
    names = model_checks.check_names(spec)
    if names == list(loaded):
        return None
    return (
        f"the spec's model checks {names} differ from those "
        f"loaded with the definitions {list(loaded)} (CHURN_SPEC changed since): "
        "reload the code location, then run again"
    )


def counted_available(checked: CheckedModel, available: int | None) -> CheckedModel:
    """``checked`` with ``n_available_rows`` counted where the rows lie (``available``: weeks
    the Spark engine sampled to the cap before collecting; None: the collected rows were
    all of them)."""
    if available is None:
        return checked
    trained = replace(checked.trained, n_available_rows=available)
    return replace(
        checked, trained=trained, metrics={**checked.metrics, "n_available_rows": available}
    )


def fit_summary(cfg: TrainingConfig, checked: CheckedModel) -> str:
    """The log line of a finished fit."""
    trained = checked.trained
    return (
        f"fitted {cfg.estimator} on {trained.n_train_rows} of {trained.n_available_rows} "
        f"training rows (cap {cfg.max_training_rows or 'none'}) in "
        f"{trained.fit_seconds:.1f}s"
    )


def registration(
    checked: CheckedModel,
    train_cfg: TrainingConfig,
    check_cfg: ModelCheckConfig,
    spec: Spec,
    lineage: Lineage,
) -> Registration:
    """What is logged with the model: training and check parameters, metrics, lineage
    tags, the drift reference profile, the check outcomes and the CBPE calibrator fitted
    on the holdout (``cbpe_calibrator.json``: the estimate of a week before its outcomes)."""
    return Registration(
        pipeline=checked.trained.pipeline,
        spec=spec,
        input_example=training.model_inputs(checked.train_rows, spec),
        params={
            **train_cfg.params(),
            **{f"check_{k}": v for k, v in check_cfg.__dict__.items() if v is not None},
        },
        metrics=checked.metrics,
        tags={
            "data_version": lineage.data_version,
            "holdout_hash": lineage.holdout_hash,
            "git_commit": lineage.git_commit,
            "dagster_run_id": lineage.run_id,
            TAG_MODEL_CHECKS: "failed" if checked.failed else "passed",
        },
        json_artifacts={
            "reference_profile.json": drift.build_reference_profile(checked.train_rows, spec),
            "model_checks.json": [o.as_dict() for o in checked.outcomes],
            **(
                {}
                if checked.calibrator is None
                else {cbpe.CALIBRATOR_ARTIFACT: checked.calibrator.to_dict()}
            ),
        },
        run_name=f"challenger-{lineage.run_id[:8]}",
    )


def failure_text(version: str, failed: Sequence[str], outcomes: Sequence[CheckOutcome]) -> str:
    """The failure of a registered version that did not pass its model checks."""
    return (
        f"model version {version} failed check(s) {', '.join(failed)}; it stays "
        f"registered without the '{CHALLENGER}' alias and is not evaluated for promotion. "
        + " | ".join(o.description for o in outcomes if not o.passed)
    )


def challenger(
    registered: Registered, checked: CheckedModel, cfg: TrainingConfig, lineage: Lineage
) -> ChallengerModel:
    """The hand-off to the gate for a version that passed every check."""
    return ChallengerModel(
        model_name=registered.name,
        version=registered.version,
        model_uri=registered.model_uri,
        run_id=registered.run_id,
        experiment_id=registered.experiment_id,
        data_version=lineage.data_version,
        holdout_hash=lineage.holdout_hash,
        metrics=checked.metrics,
        checks_passed=True,
        params=cfg.params(),
    )


def model_metadata(model: ChallengerModel, estimator: str, spec: Spec) -> dict[str, Any]:
    """What the UI shows of a registered challenger (without the registry's links)."""
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
    }


def holdout_quality(metrics: Mapping[str, float]) -> dict[str, Any] | None:
    """A registered version's holdout AUC and its interval from its logged ``metrics``
    (None when they were not logged, e.g. a model registered by hand)."""
    names = ("holdout_auc", "holdout_auc_ci_lower", "holdout_auc_ci_upper")
    if not all(name in metrics for name in names):
        return None
    auc, lower, upper = (round(float(metrics[name]), 4) for name in names)
    return {"holdout_auc": auc, "holdout_auc_interval": [lower, upper]}


def quality_line(version: str, metrics: Mapping[str, float]) -> str:
    """``champion v3: holdout AUC 0.8441, interval [0.8222, 0.8658]`` (what a person asks
    first about the model that serves), or says the metrics are missing."""
    quality = holdout_quality(metrics)
    if quality is None:
        return f"champion v{version}: no holdout AUC logged with this version"
    lower, upper = quality["holdout_auc_interval"]
    return (
        f"champion v{version}: holdout AUC {quality['holdout_auc']:.4f}, "
        f"interval [{lower:.4f}, {upper:.4f}]"
    )
