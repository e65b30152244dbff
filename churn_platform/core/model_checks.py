"""The model tests (layer 1 feature invariants, layer 3 model behaviour) as pure functions.

Each returns a ``CheckOutcome`` carrying its evidence; the Dagster layer turns
them into asset checks on ``challenger_model`` and the promotion gate reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from churn_platform.core import metrics, records
from churn_platform.core import schema as s
from churn_platform.core.features import FEATURE_RANGES
from churn_platform.core.training import (
    TrainedModel,
    TrainingConfig,
    model_inputs,
    predict_proba,
    train,
)

MetadataValue = float | int | str | bool | None


@dataclass(frozen=True)
class ModelCheckConfig:
    """Thresholds of the model checks (all configurable from the Dagster run config).

    min_auc: the holdout AUC must reach this.
    auc_pass_on: "lower": the bootstrap interval's lower bound must reach min_auc;
        "point": the point estimate must.
    min_slice_auc: every slice with enough rows must reach this AUC.
    min_slice_rows: slices with fewer holdout rows get no AUC (skipped, with the reason).
    min_invariance_fraction: share of rows whose predicted churn must drop when the
        contract changes from monthly to annual.
    n_resamples: bootstrap resamples of the AUC interval.
    level: confidence level of the AUC interval.
    seed: random seed of the bootstrap.
    """

    min_auc: float = 0.80
    auc_pass_on: str = "lower"
    min_slice_auc: float = 0.74
    min_slice_rows: int = metrics.MIN_SLICE_ROWS
    min_invariance_fraction: float = 0.90
    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.auc_pass_on not in ("lower", "point"):
            raise ValueError(f"auc_pass_on must be 'lower' or 'point', got {self.auc_pass_on!r}")
        for name in ("min_auc", "min_slice_auc", "min_invariance_fraction", "level"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict and the evidence a person needs to trust it."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    table: pd.DataFrame | None = None  # shown as a markdown table

    def as_dict(self) -> dict[str, MetadataValue]:
        """Name, verdict, description and evidence values (JSON-able; the table is left out)."""
        return {
            "name": self.name,
            "passed": self.passed,
            "description": self.description,
            **self.metadata,
        }


def auc_check(y: np.ndarray, scores: np.ndarray, config: ModelCheckConfig) -> CheckOutcome:
    """Holdout AUC >= ``min_auc``, judged on the bootstrap CI's lower bound or on the point."""
    ci = metrics.bootstrap_auc_ci(
        y, scores, n_resamples=config.n_resamples, level=config.level, seed=config.seed
    )
    judged = ci.lower if config.auc_pass_on == "lower" else ci.point
    passed = bool(judged >= config.min_auc)
    return CheckOutcome(
        name=records.HOLDOUT_AUC,
        passed=passed,
        description=(
            f"AUC {ci.point:.4f} ({config.level:.0%} CI {ci.lower:.4f}-{ci.upper:.4f}); "
            f"the {'lower bound' if config.auc_pass_on == 'lower' else 'point estimate'} "
            f"{'clears' if passed else 'misses'} {config.min_auc}"
        ),
        metadata={
            "auc": round(ci.point, 5),
            "auc_ci_lower": round(ci.lower, 5),
            "auc_ci_upper": round(ci.upper, 5),
            "ci_level": config.level,
            "n_resamples": config.n_resamples,
            "threshold": config.min_auc,
            "pass_on": config.auc_pass_on,
            "n_rows": int(len(y)),
        },
    )


def slice_auc_check(
    frame: pd.DataFrame, scores: np.ndarray, config: ModelCheckConfig
) -> CheckOutcome:
    """AUC on each important slice (enterprise, contract types, tenure bands) >= ``min_slice_auc``.

    A slice with fewer than ``min_slice_rows`` rows or one class is skipped with the reason,
    and does not fail the check.
    """
    y = frame[s.TARGET].astype(int).to_numpy()
    results = metrics.slice_aucs(
        (y, scores), metrics.default_slices(frame), min_rows=config.min_slice_rows
    )
    rows = []
    failing = []
    for r in results:
        status = (
            "skipped" if r.auc is None else ("pass" if r.auc >= config.min_slice_auc else "FAIL")
        )
        if status == "FAIL":
            failing.append(r.name)
        rows.append(
            {
                "slice": r.name,
                "rows": r.n,
                "churners": r.n_pos,
                "auc": None if r.auc is None else round(r.auc, 4),
                "status": status,
                "note": r.skipped_reason or "",
            }
        )
    table = pd.DataFrame(rows)
    evaluated = [r.auc for r in results if r.auc is not None]
    return CheckOutcome(
        name=records.SLICE_AUC,
        passed=not failing,
        description=(
            f"every evaluated slice has AUC >= {config.min_slice_auc}"
            if not failing
            else f"slice(s) {', '.join(failing)} below {config.min_slice_auc}"
        ),
        metadata={
            "threshold": config.min_slice_auc,
            "min_slice_auc_observed": round(min(evaluated), 5) if evaluated else None,
            "slices_evaluated": len(evaluated),
            "slices_skipped": len(results) - len(evaluated),
            "failing_slices": ", ".join(failing) or "none",
        },
        table=table,
    )


def invariance_check(
    pipeline: Pipeline, frame: pd.DataFrame, config: ModelCheckConfig
) -> CheckOutcome:
    """Behavioural invariance: monthly -> annual contract lowers predicted churn for most rows.

    Every holdout row is scored twice, once with ``contract_type`` set to monthly and once
    to annual, all else equal; the check passes when the annual score is strictly lower
    for more than ``min_invariance_fraction`` of rows.
    """
    inputs = model_inputs(frame)
    as_monthly = inputs.assign(**{s.CONTRACT_TYPE: "monthly"})
    as_annual = inputs.assign(**{s.CONTRACT_TYPE: "annual"})
    p_monthly = pipeline.predict_proba(as_monthly)[:, 1]
    p_annual = pipeline.predict_proba(as_annual)[:, 1]
    lowered = p_annual < p_monthly
    fraction = float(lowered.mean()) if len(lowered) else 0.0
    passed = fraction > config.min_invariance_fraction
    sample = (
        frame.loc[~lowered, [s.CUSTOMER_ID]]
        .head(10)
        .assign(
            p_monthly=np.round(p_monthly[~lowered][:10], 4),
            p_annual=np.round(p_annual[~lowered][:10], 4),
        )
    )
    return CheckOutcome(
        name=records.CONTRACT_INVARIANCE,
        passed=passed,
        description=(
            f"monthly -> annual lowers predicted churn for {fraction:.1%} of {len(lowered)} rows "
            f"(needs more than {config.min_invariance_fraction:.0%})"
        ),
        metadata={
            "fraction_lowered": round(fraction, 5),
            "threshold": config.min_invariance_fraction,
            "rows": int(len(lowered)),
            "rows_not_lowered": int((~lowered).sum()),
            "mean_delta": round(float(np.mean(p_annual - p_monthly)), 5) if len(lowered) else None,
        },
        table=sample if len(sample) else None,
    )


def coverage_check(frame: pd.DataFrame, scores: np.ndarray) -> CheckOutcome:
    """Every row gets a finite probability in [0, 1]."""
    scores = np.asarray(scores, dtype=float)
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    passed = len(scores) == len(frame) and not bad.any()
    sample = frame.loc[bad, [s.CUSTOMER_ID]].head(10).assign(score=scores[bad][:10])
    return CheckOutcome(
        name=records.PREDICTION_COVERAGE,
        passed=bool(passed),
        description=f"{len(scores) - int(bad.sum())} of {len(frame)} rows got a finite probability in [0, 1]",
        metadata={
            "rows": int(len(frame)),
            "scored": int(len(scores)),
            "bad_scores": int(bad.sum()),
            "min_score": round(float(np.nanmin(scores)), 6) if len(scores) else None,
            "max_score": round(float(np.nanmax(scores)), 6) if len(scores) else None,
        },
        table=sample if bad.any() else None,
    )


def feature_invariant_check(pipeline: Pipeline, frame: pd.DataFrame) -> CheckOutcome:
    """Layer 1 on real data: every bounded encoded feature is in its range and never NaN or inf.

    Bounded features (cyclical hour, one-hot and frequency encodings, the enterprise flag)
    may be NaN only where their input was missing; no feature may be infinite.
    """
    features = pipeline.named_steps["features"]
    encoded = pd.DataFrame(
        features.transform(model_inputs(frame)), columns=features.get_feature_names_out()
    )
    problems = []
    for name, (lo, hi) in FEATURE_RANGES.items():
        if name not in encoded:
            problems.append(
                {"feature": name, "problem": "missing from the pipeline output", "rows": len(frame)}
            )
            continue
        col = encoded[name]
        source = name.rsplit("_", 1)[0] if name.startswith(s.LAST_LOGIN_HOUR) else None
        allowed_nan = frame[source].isna().to_numpy() if source else np.zeros(len(frame), bool)
        nan_rows = int((col.isna().to_numpy() & ~allowed_nan).sum())
        out_rows = int(((col < lo) | (col > hi)).sum())
        if nan_rows:
            problems.append(
                {"feature": name, "problem": "NaN from a present input", "rows": nan_rows}
            )
        if out_rows:
            problems.append({"feature": name, "problem": f"outside [{lo}, {hi}]", "rows": out_rows})
    inf_rows = int(np.isinf(encoded.to_numpy(dtype=float)).any(axis=1).sum())
    if inf_rows:
        problems.append({"feature": "(any)", "problem": "infinite value", "rows": inf_rows})
    return CheckOutcome(
        name=records.FEATURE_INVARIANTS,
        passed=not problems,
        description=(
            f"{len(FEATURE_RANGES)} bounded features in range, no NaN or inf, on {len(frame)} rows"
            if not problems
            else f"{len(problems)} feature invariant(s) broken"
        ),
        metadata={
            "features_checked": len(FEATURE_RANGES),
            "n_features_out": encoded.shape[1],
            "rows": len(frame),
        },
        table=pd.DataFrame(problems) if problems else None,
    )


def run_model_checks(
    pipeline: Pipeline, holdout: pd.DataFrame, config: ModelCheckConfig
) -> list[CheckOutcome]:
    """All model checks on the holdout, in a fixed order."""
    scores = predict_proba(pipeline, holdout)
    y = holdout[s.TARGET].astype(int).to_numpy()
    return [
        feature_invariant_check(pipeline, holdout),
        auc_check(y, scores, config),
        slice_auc_check(holdout, scores, config),
        invariance_check(pipeline, holdout, config),
        coverage_check(holdout, scores),
    ]


@dataclass(frozen=True)
class CheckedModel:
    """A model fitted on the non-holdout rows, its check outcomes and the numbers to log."""

    trained: TrainedModel
    train_rows: pd.DataFrame
    outcomes: list[CheckOutcome]
    metrics: dict[str, float]

    @property
    def failed(self) -> list[str]:
        """Names of the checks that did not pass."""
        return [o.name for o in self.outcomes if not o.passed]


def train_and_check(
    frame: pd.DataFrame,
    holdout: pd.DataFrame,
    training_config: TrainingConfig,
    check_config: ModelCheckConfig,
) -> CheckedModel:
    """Fit on the rows of ``frame`` whose customer is not in ``holdout``; check on ``holdout``.

    Training is capped at ``training_config.max_training_rows`` (a stratified sample of
    those rows); the checks use every holdout row. ``train_rows`` are the rows fitted.
    The metrics are the holdout AUC and its interval, the train AUC (on the fitted rows),
    the invariance fraction, the fit time, the fitted and available row counts and the
    boosting iterations run.
    """
    candidates = ~frame[s.CUSTOMER_ID].isin(holdout[s.CUSTOMER_ID]).to_numpy(dtype=bool)
    trained = train(frame, training_config, candidates)
    train_rows = trained.rows if trained.rows is not None else frame.loc[candidates]
    outcomes = run_model_checks(trained.pipeline, holdout, check_config)
    by_name = {o.name: o.metadata for o in outcomes}
    auc: dict[str, Any] = dict(by_name[records.HOLDOUT_AUC])
    y = train_rows[s.TARGET].astype(int).to_numpy()
    extra = {} if trained.n_iter is None else {"n_iter": float(trained.n_iter)}
    return CheckedModel(
        trained,
        train_rows,
        outcomes,
        {
            "holdout_auc": float(auc["auc"]),
            "holdout_auc_ci_lower": float(auc["auc_ci_lower"]),
            "holdout_auc_ci_upper": float(auc["auc_ci_upper"]),
            "train_auc": metrics.auc(y, predict_proba(trained.pipeline, train_rows)),
            "invariance_fraction": float(
                by_name[records.CONTRACT_INVARIANCE]["fraction_lowered"]  # type: ignore[arg-type]
            ),
            "fit_seconds": trained.fit_seconds,
            "n_train_rows": trained.n_train_rows,
            "n_available_rows": trained.n_available_rows,
            **extra,
        },
    )
