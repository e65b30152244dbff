"""Build and fit the churn model: the feature transformer followed by an estimator, as one pipeline."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from churn_platform.core.features import build_feature_transformer, native_category_indices
from churn_platform.core.spec import Spec, default_spec

ESTIMATORS = ("hist_gradient_boosting", "logistic_regression")


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
    """

    estimator: str = "hist_gradient_boosting"
    seed: int = 42
    learning_rate: float = 0.05
    max_iter: int = 200
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 80
    l2_regularization: float = 1.0
    c: float = 1.0

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

    def params(self) -> dict[str, str | int | float | bool | None]:
        """The parameters that matter for the chosen estimator (what MLflow logs)."""
        common: dict[str, str | int | float | bool | None] = {
            "estimator": self.estimator,
            "seed": self.seed,
        }
        if self.estimator == "logistic_regression":
            return {**common, "c": self.c}
        full = asdict(self)
        full.pop("c")
        return full


def build_model_pipeline(config: TrainingConfig, spec: Spec | None = None) -> Pipeline:
    """The unfitted model: ``features`` (the ColumnTransformer) then ``model`` (the estimator).

    The features are the spec's (default: the shipped spec). Gradient boosting gets the
    ``native`` categoricals as category codes and ``categorical_features``; logistic
    regression, which has no native support, one-hot encodes them instead.
    """
    if config.estimator == "hist_gradient_boosting":
        estimator = HistGradientBoostingClassifier(
            learning_rate=config.learning_rate,
            max_iter=config.max_iter,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            early_stopping=False,
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
    """A fitted pipeline and what it took to fit it."""

    pipeline: Pipeline
    config: TrainingConfig
    n_train_rows: int
    train_positive_rate: float
    fit_seconds: float


def _select(frame: pd.DataFrame, columns: list[str], whose: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"frame is missing model input column(s) {missing} ({whose}); "
            f"it has {list(frame.columns)}"
        )
    return frame[columns]


def model_inputs(frame: pd.DataFrame, spec: Spec | None = None) -> pd.DataFrame:
    """The model's input columns (the spec's features), in spec order, from a validated frame."""
    spec = spec or default_spec()
    return _select(frame, list(spec.feature_names), f"the features of spec {spec.name!r}")


def train(frame: pd.DataFrame, config: TrainingConfig, spec: Spec | None = None) -> TrainedModel:
    """Fit the pipeline on validated rows (labels in the spec's target column, ``churned`` by
    default); rows with no label are dropped. Only the spec's features are model inputs."""
    spec = spec or default_spec()
    target = spec.target_column
    if target not in frame.columns:
        raise ValueError(
            f"training data has no target column {target!r} (spec target.column); "
            f"it has {list(frame.columns)}"
        )
    labelled = frame[frame[target].notna()]
    y = labelled[target].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"training data has {len(y)} labelled rows of a single class; "
            f"the model needs both {target}=0 and {target}=1"
        )
    pipeline = build_model_pipeline(config, spec)
    start = time.perf_counter()
    pipeline.fit(model_inputs(labelled, spec), y)
    return TrainedModel(
        pipeline=pipeline,
        config=config,
        n_train_rows=len(labelled),
        train_positive_rate=float(y.mean()),
        fit_seconds=time.perf_counter() - start,
    )


def fitted_inputs(pipeline: Pipeline, frame: pd.DataFrame) -> pd.DataFrame:
    """The columns ``pipeline`` was fitted on (``feature_names_in_``), in that order.

    Each model so scores with its own spec's columns: a champion trained on an older spec
    and a challenger on the current one read the same rows differently.
    """
    names = getattr(pipeline, "feature_names_in_", None)
    if names is None:  # fitted on an array: it can only be the shipped spec's columns
        return model_inputs(frame)
    columns = [str(c) for c in names]
    return _select(frame, columns, "the columns the model was fitted on")


def predict_proba(pipeline: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """Churn probability per row (the positive class column of ``predict_proba``)."""
    return pipeline.predict_proba(fitted_inputs(pipeline, frame))[:, 1]
