"""Build and fit the churn model: the feature transformer followed by an estimator, as one pipeline."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from churn_platform.core import schema as s
from churn_platform.core.features import build_feature_transformer, native_category_indices
from churn_platform.core.spec import Spec

ESTIMATORS = ("hist_gradient_boosting", "logistic_regression")
EARLY_STOPPING = ("auto", "on", "off")
# "auto" early stopping starts here: below, every row is worth more to the fit than a
# validation split is to the stopping rule (and small-table models stay as they were)
EARLY_STOPPING_AUTO_ROWS = 100_000


@dataclass(frozen=True)
class TrainingConfig:
    """Estimator choice and hyperparameters. Same config, data and seed give the same model.

    estimator: "hist_gradient_boosting" or "logistic_regression".
    seed: random state of the estimator (and of the model checks' bootstrap when they are
        configured together); the same config, data and seed give the same model.
    learning_rate: gradient boosting's shrinkage per iteration (> 0).
    max_iter: gradient boosting's number of iterations (trees).
    max_leaf_nodes: gradient boosting's maximum leaves per tree (>= 2).
    min_samples_leaf: gradient boosting's minimum rows per leaf.
    l2_regularization: gradient boosting's L2 penalty on leaf values.
    c: logistic regression's inverse regularisation strength (> 0).
    max_training_rows: most rows the model is fitted on; a larger table is cut to a
        stratified sample by the target (same class ratio, seeded by ``seed``). 0 = no cap.
        The holdout and the model checks always use every holdout row.
    early_stopping: gradient boosting stops when the validation loss has not improved for
        ``n_iter_no_change`` iterations: "on", "off", or "auto" (on from 100,000 fitted rows).
    validation_fraction: share of the fitted rows held back for early stopping (0 < f < 1).
    n_iter_no_change: iterations without improvement before early stopping stops (>= 1).
    """

    estimator: str = "hist_gradient_boosting"
    seed: int = 42
    learning_rate: float = 0.05
    max_iter: int = 200
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 80
    l2_regularization: float = 1.0
    c: float = 1.0
    max_training_rows: int = 1_000_000
    early_stopping: str = "auto"
    validation_fraction: float = 0.1
    n_iter_no_change: int = 10

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}; "
                "set it in the challenger_model config"
            )
        for name in ("learning_rate", "c"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_iter", "max_leaf_nodes", "min_samples_leaf"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_leaf_nodes < 2:
            raise ValueError(f"max_leaf_nodes must be >= 2, got {self.max_leaf_nodes!r}")
        if self.max_training_rows is not None and self.max_training_rows < 0:
            raise ValueError(
                f"max_training_rows must be >= 0 (0 = no cap), got {self.max_training_rows!r}"
            )
        if self.early_stopping not in EARLY_STOPPING:
            raise ValueError(
                f"early_stopping must be one of {EARLY_STOPPING}, got {self.early_stopping!r}"
            )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be >= 1, got {self.n_iter_no_change!r}")

    def stops_early(self, n_rows: int) -> bool:
        """Whether gradient boosting uses early stopping when fitted on ``n_rows`` rows."""
        if self.early_stopping == "auto":
            return n_rows >= EARLY_STOPPING_AUTO_ROWS
        return self.early_stopping == "on"

    def params(self) -> dict[str, str | int | float | bool | None]:
        """The parameters that matter for the chosen estimator (what MLflow logs)."""
        common: dict[str, str | int | float | bool | None] = {
            "estimator": self.estimator,
            "seed": self.seed,
            "max_training_rows": self.max_training_rows or 0,
        }
        if self.estimator == "logistic_regression":
            return {**common, "c": self.c}
        full = asdict(self)
        full.pop("c")
        return {**full, **common}


def build_model_pipeline(config: TrainingConfig, spec: Spec, n_rows: int = 0) -> Pipeline:
    """The unfitted model: ``features`` (the ColumnTransformer) then ``model`` (the estimator).

    The features are the spec's. Gradient boosting gets the ``native`` categoricals as
    category codes and ``categorical_features``; logistic regression, which has no native
    support, one-hot encodes them instead. ``n_rows`` (the
    rows it will be fitted on) decides ``early_stopping="auto"``.
    """
    if config.estimator == "hist_gradient_boosting":
        estimator = HistGradientBoostingClassifier(
            learning_rate=config.learning_rate,
            max_iter=config.max_iter,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            early_stopping=config.stops_early(n_rows),
            validation_fraction=config.validation_fraction,
            n_iter_no_change=config.n_iter_no_change,
            random_state=config.seed,
        )
        native = native_category_indices(spec)
        if native:
            estimator.set_params(categorical_features=native)
        return Pipeline([("features", build_feature_transformer(spec)), ("model", estimator)])
    return Pipeline(
        [
            ("features", build_feature_transformer(spec, native=False)),
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=config.c, max_iter=2000, random_state=config.seed)),
        ]
    )


@dataclass
class TrainedModel:
    """A fitted pipeline and what it took to fit it.

    ``n_train_rows`` rows were fitted (``rows``), sampled from ``n_available_rows``
    labelled rows when ``max_training_rows`` capped them; ``n_iter`` is the number of
    boosting iterations run (below ``max_iter`` when early stopping stopped; None for
    logistic regression).
    """

    pipeline: Pipeline
    config: TrainingConfig
    n_train_rows: int
    train_positive_rate: float
    fit_seconds: float
    n_available_rows: int = 0
    n_iter: int | None = None
    rows: pd.DataFrame | None = field(default=None, repr=False)


def _select(frame: pd.DataFrame, columns: list[str], whose: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"frame is missing model input column(s) {missing} ({whose}); "
            f"it has {list(frame.columns)}"
        )
    return frame[columns]


def stratified_sample(labels: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_rows`` rows, drawn per class of ``labels``.

    Each class keeps its share (largest remainder, so the counts add up to ``max_rows``);
    the same labels, cap and seed give the same rows in every process. No cap (0/None)
    or no more rows than the cap: every position.
    """
    n = len(labels)
    if not max_rows or n <= max_rows:
        return np.arange(n)
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    exact = counts * (max_rows / n)
    quotas = np.floor(exact).astype(np.int64)
    short = max_rows - int(quotas.sum())
    # the classes with the largest remainders get the rows the floors left over
    quotas[np.argsort(-(exact - quotas), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(inverse == k), size=int(q), replace=False)
        for k, q in enumerate(quotas)
    ]
    return np.sort(np.concatenate(picked))


def model_inputs(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The model's input columns (the spec's features), in spec order, from a validated frame."""
    return _select(frame, list(spec.feature_names), f"the features of spec {spec.name!r}")


def train(
    frame: pd.DataFrame,
    config: TrainingConfig,
    spec: Spec,
    candidates: np.ndarray | None = None,
) -> TrainedModel:
    """Fit the pipeline on validated rows (labels in the spec's target column); rows with no
    label are dropped. Only the spec's features are model inputs.

    ``candidates`` (a boolean mask over ``frame``) limits the rows that may be fitted (the
    non-holdout rows); at most ``config.max_training_rows`` of them are, as a stratified
    sample. Only the sample is copied out of ``frame``.
    """
    target = spec.target_column
    if target not in frame.columns:
        raise ValueError(
            f"training data has no target column {target!r} (spec target.column); "
            f"it has {list(frame.columns)}"
        )
    usable = frame[target].notna().to_numpy(dtype=bool)
    if candidates is not None:
        usable &= np.asarray(candidates, dtype=bool)
    positions = np.flatnonzero(usable)
    labels = frame[target].to_numpy(dtype="float64", na_value=np.nan)[positions].astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError(
            f"training data has {len(labels)} labelled rows of a single class; "
            f"the model needs both {target}=0 and {target}=1"
        )
    chosen = stratified_sample(labels, config.max_training_rows, config.seed)
    rows = frame.iloc[positions[chosen]]
    y = labels[chosen]
    pipeline = build_model_pipeline(config, spec, len(rows))
    start = time.perf_counter()
    pipeline.fit(model_inputs(rows, spec), y)
    boosted = isinstance(pipeline.named_steps["model"], HistGradientBoostingClassifier)
    return TrainedModel(
        pipeline=pipeline,
        config=config,
        n_train_rows=len(rows),
        train_positive_rate=float(y.mean()),
        fit_seconds=time.perf_counter() - start,
        n_available_rows=len(positions),
        n_iter=int(pipeline.named_steps["model"].n_iter_) if boosted else None,
        rows=rows,
    )


def fitted_inputs(pipeline: Pipeline, frame: pd.DataFrame) -> pd.DataFrame:
    """The columns ``pipeline`` was fitted on (``feature_names_in_``), in that order.

    Each model so scores with its own spec's columns: a champion trained on an older spec
    and a challenger on the current one read the same rows differently.
    """
    names = getattr(pipeline, "feature_names_in_", None)
    # fitted on an array (no names): only a model of the shipped spec's columns can be
    columns = list(s.MODEL_INPUT_COLUMNS) if names is None else [str(c) for c in names]
    return _select(frame, columns, "the columns the model was fitted on")


def predict_proba(pipeline: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """Churn probability per row (the positive class column of ``predict_proba``)."""
    return pipeline.predict_proba(fitted_inputs(pipeline, frame))[:, 1]
