"""The model tests (layer 1 feature invariants, layer 3 model behaviour) as pure functions.

Each returns a ``CheckOutcome`` carrying its evidence; the Dagster layer turns
them into asset checks on ``challenger_model`` and the promotion gate reads them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from churn_platform.core import cbpe, metrics, records, slices
from churn_platform.core.features import feature_ranges, nan_allowed_sources
from churn_platform.core.spec import Invariance, Spec
from churn_platform.core.training import (
    TrainedModel,
    TrainingConfig,
    fitted_inputs,
    predict_proba,
    train,
)

MetadataValue = float | int | str | bool | None


@dataclass(frozen=True)
class ModelCheckConfig:
    """Thresholds of the model checks (all configurable from the Dagster run config).

    min_auc: the holdout AUC must reach this (empty: the spec's model.min_auc).
    auc_pass_on: "lower": the bootstrap interval's lower bound must reach min_auc;
        "point": the point estimate must.
    min_slice_auc: a slice fails when the upper bound of its AUC interval is below this
        (the evidence shows it below; empty: the spec's model.min_slice_auc).
    min_slice_rows: slices with fewer holdout rows get no AUC (skipped, with the reason;
        empty: the spec's model.min_slice_rows).
    min_slice_per_class: slices with fewer churners or non-churners than this are reported
        as "not enough evidence" and never fail.
    min_invariance_fraction: share of rows whose predicted churn must move the stated way
        in every invariance (empty: each invariance's min_fraction from the spec).
    n_resamples: bootstrap resamples of the AUC interval.
    level: confidence level of the AUC interval.
    seed: random seed of the bootstrap.
    """

    min_auc: float | None = None
    auc_pass_on: str = "lower"
    min_slice_auc: float | None = None
    min_slice_rows: int | None = None
    min_slice_per_class: int = slices.MIN_SLICE_CLASS_ROWS
    min_invariance_fraction: float | None = None
    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.auc_pass_on not in ("lower", "point"):
            raise ValueError(f"auc_pass_on must be 'lower' or 'point', got {self.auc_pass_on!r}")
        for name in ("min_auc", "min_slice_auc", "min_invariance_fraction", "level"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.min_slice_rows is not None and self.min_slice_rows < 1:
            raise ValueError(f"min_slice_rows must be >= 1, got {self.min_slice_rows!r}")
        if self.min_slice_per_class < 1:
            raise ValueError(f"min_slice_per_class must be >= 1, got {self.min_slice_per_class!r}")

    def resolved(self, spec: Spec) -> ModelCheckConfig:
        """This config with every empty threshold taken from the spec's ``model`` section.

        ``min_invariance_fraction`` stays empty when unset: each invariance then uses its own
        ``min_fraction``.
        """
        model = spec.model
        return dataclasses.replace(
            self,
            min_auc=model.min_auc if self.min_auc is None else self.min_auc,
            min_slice_auc=model.min_slice_auc if self.min_slice_auc is None else self.min_slice_auc,
            min_slice_rows=(
                model.min_slice_rows if self.min_slice_rows is None else self.min_slice_rows
            ),
        )


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


def auc_check(
    y: np.ndarray, scores: np.ndarray, config: ModelCheckConfig, spec: Spec
) -> CheckOutcome:
    """Holdout AUC >= ``min_auc``, judged on the bootstrap CI's lower bound or on the point."""
    config = config.resolved(spec)
    assert config.min_auc is not None  # resolved
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
        # unrounded: the evaluation report quotes these very numbers (one bootstrap per model)
        metadata={
            "auc": ci.point,
            "auc_ci_lower": ci.lower,
            "auc_ci_upper": ci.upper,
            "ci_level": config.level,
            "n_resamples": config.n_resamples,
            "threshold": config.min_auc,
            "pass_on": config.auc_pass_on,
            "n_rows": int(len(y)),
        },
    )


def slice_auc_check(
    frame: pd.DataFrame, scores: np.ndarray, config: ModelCheckConfig, spec: Spec
) -> CheckOutcome:
    """Each slice of the spec (shipped spec: enterprise, contract types, tenure bands) is not
    shown to be below ``min_slice_auc``: a slice fails when the upper bound of its bootstrap
    AUC interval (``level``) is below the floor, not when its point AUC is.

    A slice with fewer than ``min_slice_rows`` rows or one class is skipped, and one with
    fewer than ``min_slice_per_class`` churners or non-churners is "not enough evidence";
    neither fails the check.
    """
    config = config.resolved(spec)
    assert config.min_slice_auc is not None and config.min_slice_rows is not None  # resolved
    floor = config.min_slice_auc
    y = frame[spec.target_column].astype(int).to_numpy()
    results = slices.slice_aucs(
        (y, scores),
        slices.default_slices(frame, spec),
        min_rows=config.min_slice_rows,
        min_per_class=config.min_slice_per_class,
        interval=(config.n_resamples, config.level, config.seed),
    )
    rows = [_slice_row(r, floor) for r in results]
    failing = [row["slice"] for row in rows if row["status"] == "FAIL"]
    thin = [row["slice"] for row in rows if row["status"] == "not enough evidence"]
    evaluated = [r.auc for r in results if r.auc is not None]
    return CheckOutcome(
        name=records.SLICE_AUC,
        passed=not failing,
        description=(
            f"no evaluated slice is shown below AUC {floor} (the upper bound of its "
            f"{config.level:.0%} interval)"
            if not failing
            else f"slice(s) {', '.join(failing)} shown below {floor}: the upper bound of their "
            f"{config.level:.0%} AUC interval is below it"
        ),
        metadata={
            "threshold": floor,
            "rule": "fail when the slice AUC interval's upper bound < threshold",
            "min_slice_auc_observed": round(min(evaluated), 5) if evaluated else None,
            "slices_evaluated": len(evaluated),
            "slices_skipped": len(results) - len(evaluated),
            "slices_not_enough_evidence": ", ".join(thin) or "none",
            "min_slice_per_class": config.min_slice_per_class,
            "failing_slices": ", ".join(failing) or "none",
        },
        table=pd.DataFrame(rows),
    )


def _slice_row(r: slices.SliceResult, floor: float) -> dict[str, Any]:
    """One slice's row of the check's table: its AUC, interval and verdict."""
    if r.auc is None:
        reason = r.skipped_reason or ""
        status = "not enough evidence" if reason.startswith("not enough evidence") else "skipped"
    elif r.upper is not None and r.upper < floor:
        status = "FAIL"
    else:
        status = "pass" if r.auc >= floor else "pass (below the floor, not shown)"
    return {
        "slice": r.name,
        "rows": r.n,
        "churners": r.n_pos,
        "auc": None if r.auc is None else round(r.auc, 4),
        "ci_lower": None if r.lower is None else round(r.lower, 4),
        "ci_upper": None if r.upper is None else round(r.upper, 4),
        "status": status,
        "note": r.skipped_reason or "",
    }


def _sample(frame: pd.DataFrame, rows: np.ndarray, spec: Spec) -> pd.DataFrame:
    """Up to 10 of ``rows`` identified by the spec's id column (the index when it is absent)."""
    if spec.id_column in frame.columns:
        return frame.iloc[rows][[spec.id_column]].head(10)
    return pd.DataFrame({"row": frame.index[rows][:10]})


def describe_invariance(inv: Invariance) -> str:
    """One line a person reads: what changes and which way churn must move."""
    change = f"{inv.from_} -> {inv.to}" if inv.step is None else f"+{inv.step:g}"
    verb = "lowers" if inv.direction == "decrease" else "raises"
    return (
        f"{inv.feature} {change} {verb} predicted churn for more than "
        f"{inv.min_fraction:.0%} of rows."
    )


def _spec_value(spec: Spec, feature: str, value: Any) -> Any:
    """A spec-given value typed like the feature's validated column."""
    kind = spec.features[feature].kind
    if kind == "boolean":
        return str(value).strip().lower() == "true"
    if kind == "date":
        return pd.Timestamp(value)
    if kind == "categorical":
        return str(value)
    return value


def invariance_check(
    pipeline: Pipeline,
    frame: pd.DataFrame,
    config: ModelCheckConfig,
    spec: Spec,
    invariance: Invariance | None = None,
) -> CheckOutcome:
    """Behavioural invariance: changing one feature moves predicted churn the stated way.

    A value change (``from`` -> ``to``) scores every holdout row twice, once with the
    feature set to each value, all else equal; a ``step`` scores the rows where the feature
    is present as they are and with the step added. The check passes when the second score
    moves in ``direction`` (strictly) for more than the fraction of rows
    (``min_invariance_fraction`` if set, else the invariance's ``min_fraction``).
    ``invariance`` defaults to the spec's first one (shipped spec: monthly -> annual
    contract lowers churn, the ``contract_invariance`` check).
    """
    if invariance is None:
        if not spec.invariances:
            raise ValueError(f"spec {spec.name!r} declares no invariances to check")
        invariance = spec.invariances[0]
    inv = invariance
    threshold = (
        config.min_invariance_fraction
        if config.min_invariance_fraction is not None
        else inv.min_fraction
    )
    inputs = fitted_inputs(pipeline, frame)
    if inv.feature not in inputs.columns:
        raise ValueError(
            f"invariance {inv.name!r} changes {inv.feature!r}, which the model does not take "
            f"as input (it takes {list(inputs.columns)}); fix the spec's invariances"
        )
    if inv.step is None:
        before_label, after_label = str(inv.from_), str(inv.to)
        present = np.ones(len(inputs), dtype=bool)
        before = inputs.assign(**{inv.feature: _spec_value(spec, inv.feature, inv.from_)})
        after = inputs.assign(**{inv.feature: _spec_value(spec, inv.feature, inv.to)})
        change = f"{inv.from_} -> {inv.to}"
    else:
        before_label, after_label = "before", "after"
        values = pd.to_numeric(inputs[inv.feature], errors="coerce")
        present = values.notna().to_numpy(dtype=bool)
        before = inputs[present]
        after = before.assign(**{inv.feature: values[present] + inv.step})
        change = f"{inv.feature} +{inv.step:g}"
    p_before = pipeline.predict_proba(before)[:, 1] if len(before) else np.empty(0)
    p_after = pipeline.predict_proba(after)[:, 1] if len(after) else np.empty(0)
    moved = p_after < p_before if inv.direction == "decrease" else p_after > p_before
    fraction = float(moved.mean()) if len(moved) else 0.0
    passed = fraction > threshold
    verb, key = ("lowers", "lowered") if inv.direction == "decrease" else ("raises", "raised")
    not_moved = np.flatnonzero(present)[~moved]
    sample = _sample(frame, not_moved, spec).assign(
        **{
            f"p_{before_label}": np.round(p_before[~moved][:10], 4),
            f"p_{after_label}": np.round(p_after[~moved][:10], 4),
        }
    )
    return CheckOutcome(
        name=inv.name,
        passed=passed,
        description=(
            f"{change} {verb} predicted churn for {fraction:.1%} of {len(moved)} rows "
            f"(needs more than {threshold:.0%})"
        ),
        metadata={
            f"fraction_{key}": round(fraction, 5),
            "threshold": threshold,
            "rows": int(len(moved)),
            f"rows_not_{key}": int((~moved).sum()),
            "mean_delta": round(float(np.mean(p_after - p_before)), 5) if len(moved) else None,
        },
        table=sample if len(sample) else None,
    )


def invariance_fraction(outcome: CheckOutcome) -> float:
    """The share of rows that moved the stated way, from an invariance check's outcome."""
    for key in ("fraction_lowered", "fraction_raised"):
        if key in outcome.metadata:
            return float(outcome.metadata[key])  # type: ignore[arg-type]
    raise ValueError(f"check {outcome.name!r} is not an invariance check")


def coverage_check(frame: pd.DataFrame, scores: np.ndarray, spec: Spec) -> CheckOutcome:
    """Every row gets a finite probability in [0, 1]."""
    scores = np.asarray(scores, dtype=float)
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    passed = len(scores) == len(frame) and not bad.any()
    sample = _sample(frame, np.flatnonzero(bad), spec).assign(score=scores[bad][:10])
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


def feature_invariant_check(pipeline: Pipeline, frame: pd.DataFrame, spec: Spec) -> CheckOutcome:
    """Layer 1 on real data: every bounded encoded feature is in its range and never NaN or inf.

    Bounded features (``features.feature_ranges(spec)``: cyclical sin/cos, one-hot and
    frequency encodings, booleans, native category codes) may be NaN only where the input
    of a cyclical or native-coded feature was missing; no feature may be infinite.
    """
    features = pipeline.named_steps["features"]
    native = any(name == "native_categories" for name, _, _ in features.transformers)
    ranges = feature_ranges(spec, native=native)
    nan_sources = nan_allowed_sources(spec)
    encoded = pd.DataFrame(
        features.transform(fitted_inputs(pipeline, frame)),
        columns=features.get_feature_names_out(),
    )
    problems = []
    for name, (lo, hi) in ranges.items():
        if name not in encoded:
            problems.append(
                {"feature": name, "problem": "missing from the pipeline output", "rows": len(frame)}
            )
            continue
        col = encoded[name]
        source = nan_sources.get(name)
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
            f"{len(ranges)} bounded features in range, no NaN or inf, on {len(frame)} rows"
            if not problems
            else f"{len(problems)} feature invariant(s) broken"
        ),
        metadata={
            "features_checked": len(ranges),
            "n_features_out": encoded.shape[1],
            "rows": len(frame),
        },
        table=pd.DataFrame(problems) if problems else None,
    )


@dataclass(frozen=True)
class CheckInputs:
    """What a model check reads: the model, the holdout rows with their scores and labels,
    the thresholds (resolved against the spec) and the spec."""

    pipeline: Pipeline
    holdout: pd.DataFrame
    scores: np.ndarray
    labels: np.ndarray
    config: ModelCheckConfig
    spec: Spec


@dataclass(frozen=True)
class ModelCheck:
    """One model check: its name (the Dagster check's), the line the UI shows, how it runs."""

    name: str
    description: str
    run: Callable[[CheckInputs], CheckOutcome]


def _invariance(inv: Invariance) -> ModelCheck:
    """The check of one spec invariance, named after it."""
    return ModelCheck(
        inv.name,
        describe_invariance(inv),
        lambda c: invariance_check(c.pipeline, c.holdout, c.config, c.spec, inv),
    )


def model_check_registry(spec: Spec) -> list[ModelCheck]:
    """Every model check of ``spec`` in run order: the one place a model check is declared.

    ``run_model_checks``, ``check_names`` and ``check_descriptions`` (hence the Dagster
    checks on ``challenger_model``) all read this list. Each spec invariance is a check of
    its own, between the slice AUC and the coverage checks.
    """
    slices = ", ".join(sl.name for sl in spec.slices) or "none"
    return [
        ModelCheck(
            records.FEATURE_INVARIANTS,
            "Layer 1 on real data: encoded features in range, no NaN or inf.",
            lambda c: feature_invariant_check(c.pipeline, c.holdout, c.spec),
        ),
        ModelCheck(
            records.HOLDOUT_AUC,
            "Holdout AUC with a 95% bootstrap interval clears the bound.",
            lambda c: auc_check(c.labels, c.scores, c.config, c.spec),
        ),
        ModelCheck(
            records.SLICE_AUC,
            f"AUC on each slice of the spec ({slices}) clears the bound.",
            lambda c: slice_auc_check(c.holdout, c.scores, c.config, c.spec),
        ),
        *(_invariance(inv) for inv in spec.invariances),
        ModelCheck(
            records.PREDICTION_COVERAGE,
            "Every holdout row gets a finite probability in [0, 1].",
            lambda c: coverage_check(c.holdout, c.scores, c.spec),
        ),
    ]


def check_names(spec: Spec) -> list[str]:
    """The model checks' names, in ``run_model_checks`` order: one invariance check per spec
    invariance, named after it (shipped spec: ``contract_invariance``)."""
    return [check.name for check in model_check_registry(spec)]


def check_descriptions(spec: Spec) -> dict[str, str]:
    """Check name -> description, in run order.

    An invariance named like another model check raises ``ValueError`` with the fix: two
    checks of one name would be one in every place that looks them up by name.
    """
    checks = model_check_registry(spec)
    names = [check.name for check in checks]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise ValueError(
            f"spec {spec.name!r}: invariance name(s) {clash} clash with the model check of that "
            "name; rename them in the spec's 'invariances'"
        )
    return {check.name: check.description for check in checks}


def run_model_checks(
    pipeline: Pipeline,
    holdout: pd.DataFrame,
    config: ModelCheckConfig,
    spec: Spec,
) -> list[CheckOutcome]:
    """All model checks on the holdout, in a fixed order (``check_names(spec)``).

    Thresholds the config leaves empty come from the spec's ``model`` section.
    """
    inputs = CheckInputs(
        pipeline=pipeline,
        holdout=holdout,
        scores=predict_proba(pipeline, holdout),
        labels=holdout[spec.target_column].astype(int).to_numpy(),
        config=config.resolved(spec),
        spec=spec,
    )
    return [check.run(inputs) for check in model_check_registry(spec)]


@dataclass(frozen=True)
class CheckedModel:
    """A model fitted on the non-holdout rows, its check outcomes and the numbers to log."""

    trained: TrainedModel
    train_rows: pd.DataFrame
    outcomes: list[CheckOutcome]
    metrics: dict[str, float]
    # the CBPE calibrator fitted on the holdout (``cbpe.CALIBRATOR_ARTIFACT``); None: none
    calibrator: cbpe.IsotonicCalibrator | None = None

    @property
    def failed(self) -> list[str]:
        """Names of the checks that did not pass."""
        return [o.name for o in self.outcomes if not o.passed]


def train_and_check(
    frame: pd.DataFrame,
    holdout: pd.DataFrame,
    training_config: TrainingConfig,
    check_config: ModelCheckConfig,
    spec: Spec,
) -> CheckedModel:
    """Fit on the rows of ``frame`` whose entity is not in ``holdout``; check on ``holdout``.

    Training is capped at ``training_config.max_training_rows`` (a stratified sample of
    those rows); the checks use every holdout row. ``train_rows`` are the rows fitted.
    The metrics are the holdout AUC and its interval (unrounded, with its level: the
    evaluation report quotes them rather than drawing another bootstrap), the train AUC (on the fitted rows),
    the invariance fraction (the spec's first invariance; ``invariance_fraction/<name>`` for
    the others), the fit time, the fitted and available row counts and the boosting
    iterations run.
    """
    id_column = spec.id_column
    candidates = ~frame[id_column].isin(holdout[id_column]).to_numpy(dtype=bool)
    trained = train(frame, training_config, spec, candidates)
    train_rows = trained.rows if trained.rows is not None else frame.loc[candidates]
    outcomes = run_model_checks(trained.pipeline, holdout, check_config, spec)
    by_name = {o.name: o for o in outcomes}
    auc: dict[str, Any] = dict(by_name[records.HOLDOUT_AUC].metadata)
    y = train_rows[spec.target_column].astype(int).to_numpy()
    invariances: dict[str, float] = {}
    for i, inv in enumerate(spec.invariances):
        key = "invariance_fraction" if i == 0 else f"invariance_fraction/{_metric_safe(inv.name)}"
        invariances[key] = invariance_fraction(by_name[inv.name])
    extra = {} if trained.n_iter is None else {"n_iter": float(trained.n_iter)}
    calibrator = cbpe.fit_calibrator(
        holdout[spec.target_column].astype(int).to_numpy(),
        predict_proba(trained.pipeline, holdout),
    )
    return CheckedModel(
        trained,
        train_rows,
        outcomes,
        {
            "holdout_auc": float(auc["auc"]),
            "holdout_auc_ci_lower": float(auc["auc_ci_lower"]),
            "holdout_auc_ci_upper": float(auc["auc_ci_upper"]),
            "holdout_auc_ci_level": float(auc["ci_level"]),
            "train_auc": metrics.auc(y, predict_proba(trained.pipeline, train_rows)),
            **invariances,
            "fit_seconds": trained.fit_seconds,
            "n_train_rows": trained.n_train_rows,
            "n_available_rows": trained.n_available_rows,
            **extra,
        },
        calibrator,
    )


def _metric_safe(name: str) -> str:
    """``name`` with characters MLflow refuses in a metric name replaced by ``_``."""
    return re.sub(r"[^\w.\- /]", "_", name)
