"""Feature code as scikit-learn transformers, so the saved pipeline is the whole model.

Each transformer learns its state in ``fit`` (frequency tables, a reference date),
applies it in ``transform`` and names its outputs in ``get_feature_names_out``.
``build_feature_transformer`` composes them in a ``ColumnTransformer``; the model
pipeline (``core.training``) puts an estimator after it. Serving loads the same
pipeline, so serving cannot compute features differently from training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from churn_platform.core import schema as s


def _as_frame(X: object, columns: Sequence[str] | np.ndarray) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing column(s) {missing}; it has {list(X.columns)}")
        return X
    return pd.DataFrame(np.asarray(X, dtype=object), columns=list(columns))


class _ColumnwiseTransformer(TransformerMixin, BaseEstimator):
    """Shared plumbing: remember the input columns at fit, check them at transform.

    Subclasses learn state in ``_learn``, encode in ``_encode`` and name outputs with
    ``_suffixes`` (one output per suffix per input column; ``("",)`` keeps the names).
    """

    _suffixes: tuple[str, ...] = ("",)

    def fit(self, X: object, y: object = None) -> Self:
        """Remember the input columns and learn whatever the transformer learns."""
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self._learn(frame)
        return self

    def transform(self, X: object) -> np.ndarray:
        """Encode the remembered columns, shape (n_rows, n_columns * len(suffixes))."""
        check_is_fitted(self, "feature_names_in_")
        return self._encode(_as_frame(X, self.feature_names_in_))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """``<column><suffix>`` for each input column and suffix."""
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(
            [f"{c}{suffix}" for c in self.feature_names_in_ for suffix in self._suffixes],
            dtype=object,
        )

    def _learn(self, frame: pd.DataFrame) -> None:
        """Learn state from the training frame (nothing by default)."""

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError


class CyclicalEncoder(_ColumnwiseTransformer):
    """Encode periodic values (hour of day) as a point on the unit circle: sin and cos.

    Hour 23 and hour 0 are neighbours on the circle, not 23 apart. ``period`` is the
    length of the cycle (24 for hours). Missing values stay missing (NaN) in both
    outputs, for the estimator to handle.
    """

    _suffixes = ("_sin", "_cos")

    def __init__(self, period: float = 24.0) -> None:
        self.period = period

    def _learn(self, frame: pd.DataFrame) -> None:
        if not isinstance(self.period, int | float) or self.period <= 0:
            raise ValueError(
                f"CyclicalEncoder period must be a positive number, got {self.period!r}"
            )

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[list(self.feature_names_in_)].apply(pd.to_numeric, errors="coerce")
        angle = 2.0 * np.pi * values.to_numpy(dtype=float) / float(self.period)
        out = np.empty((len(frame), 2 * len(self.feature_names_in_)), dtype=float)
        out[:, 0::2] = np.sin(angle)
        out[:, 1::2] = np.cos(angle)
        return out


class FrequencyEncoder(_ColumnwiseTransformer):
    """Replace each category by its share of the training rows, learned at fit time.

    A category not seen in training (or a missing value) gets ``unseen_value``
    (0.0 by default: as rare as possible). Output is in [0, 1].
    """

    _suffixes = ("_freq",)

    def __init__(self, unseen_value: float = 0.0) -> None:
        self.unseen_value = unseen_value

    def _learn(self, frame: pd.DataFrame) -> None:
        if not 0.0 <= float(self.unseen_value) <= 1.0:
            raise ValueError(
                f"FrequencyEncoder unseen_value must be in [0, 1], got {self.unseen_value!r}"
            )
        self.frequencies_ = {
            str(col): {
                str(k): float(v)
                for k, v in frame[col].value_counts(normalize=True, dropna=True).items()
            }
            for col in frame.columns
        }

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.feature_names_in_)), dtype=float)
        for j, col in enumerate(self.feature_names_in_):
            mapped = frame[col].astype("string").map(self.frequencies_[col])
            out[:, j] = (
                pd.to_numeric(mapped, errors="coerce").fillna(self.unseen_value).to_numpy(float)
            )
        return out


class DaysSinceReference(_ColumnwiseTransformer):
    """Days between each date and a reference date learned at fit time (the newest date seen).

    Learning the reference at fit time makes the feature reproducible: the same
    model gives the same answer tomorrow, unlike "days since today". Dates after
    the reference give negative values; missing or unparseable dates give NaN.
    """

    _suffixes = ("_days_since_ref",)

    def _learn(self, frame: pd.DataFrame) -> None:
        refs = {}
        for col in frame.columns:
            dates = pd.to_datetime(frame[col], errors="coerce")
            if dates.notna().sum() == 0:
                raise ValueError(
                    f"DaysSinceReference: column {col!r} has no valid date to learn a reference from"
                )
            refs[str(col)] = dates.max().isoformat()
        self.reference_dates_ = refs

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.feature_names_in_)), dtype=float)
        for j, col in enumerate(self.feature_names_in_):
            dates = pd.to_datetime(frame[col], errors="coerce")
            delta = pd.Timestamp(self.reference_dates_[col]) - dates
            out[:, j] = delta.dt.total_seconds().to_numpy(dtype=float) / 86400.0
        return out


_BOOL_TEXT = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "yes": 1.0, "no": 0.0}


def _bool_to_float(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return (
            pd.to_numeric(values, errors="coerce")
            .astype("Float64")
            .to_numpy(float, na_value=np.nan)
        )
    text = values.astype("string").str.strip().str.lower()
    return text.map(_BOOL_TEXT).astype("Float64").to_numpy(float, na_value=np.nan)


class BooleanToFloat(_ColumnwiseTransformer):
    """Booleans (True/False, 1/0, yes/no, nullable) to 1.0/0.0, missing to NaN."""

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        return np.column_stack([_bool_to_float(frame[c]) for c in self.feature_names_in_])


class NumericPassthrough(_ColumnwiseTransformer):
    """Numeric columns as floats (nullable integers and text numbers included), missing as NaN."""

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        cols = [pd.to_numeric(frame[c], errors="coerce") for c in self.feature_names_in_]
        return np.column_stack([c.to_numpy(dtype=float, na_value=np.nan) for c in cols])


class StringCategories(_ColumnwiseTransformer):
    """Categorical columns as plain Python strings (missing as the string ``"__missing__"``).

    One-hot encoding needs one value type per column; user data and JSON requests
    bring ``pd.NA``, ``None`` and pandas string dtypes, which this normalises.
    """

    def _encode(self, frame: pd.DataFrame) -> np.ndarray:
        cols = [
            frame[c].astype("string").fillna("__missing__").to_numpy(dtype=object)
            for c in self.feature_names_in_
        ]
        return np.column_stack(cols)


def build_feature_transformer() -> ColumnTransformer:
    """The feature step of every churn model: one ``ColumnTransformer`` over the canonical columns.

    - ``last_login_hour`` -> sin/cos (cyclical, period 24);
    - ``contract_type`` -> one-hot over the known contract types (unknown -> all zero);
    - ``contract_type``, ``region`` -> frequency encoding learned at fit;
    - ``signup_date`` -> days since the newest signup seen at fit;
    - ``is_enterprise`` -> 0/1; numeric columns as floats. Missing values stay NaN.
    """
    from sklearn.pipeline import make_pipeline

    contract_onehot = make_pipeline(
        StringCategories(),
        OneHotEncoder(
            categories=[list(s.CONTRACT_TYPES)], handle_unknown="ignore", sparse_output=False
        ),
    )
    return ColumnTransformer(
        [
            ("hour_cyclical", CyclicalEncoder(period=24), [s.LAST_LOGIN_HOUR]),
            ("contract_onehot", contract_onehot, [s.CONTRACT_TYPE]),
            ("category_frequency", FrequencyEncoder(), [s.CONTRACT_TYPE, s.REGION]),
            ("signup_days", DaysSinceReference(), [s.SIGNUP_DATE]),
            ("enterprise", BooleanToFloat(), [s.IS_ENTERPRISE]),
            (
                "numeric",
                NumericPassthrough(),
                [s.TENURE_MONTHS, s.MONTHLY_SPEND, s.SUPPORT_TICKETS],
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


FEATURE_RANGES: dict[str, tuple[float, float]] = {
    f"{s.LAST_LOGIN_HOUR}_sin": (-1.0, 1.0),
    f"{s.LAST_LOGIN_HOUR}_cos": (-1.0, 1.0),
    f"{s.CONTRACT_TYPE}_freq": (0.0, 1.0),
    f"{s.REGION}_freq": (0.0, 1.0),
    **{f"{s.CONTRACT_TYPE}_{c}": (0.0, 1.0) for c in s.CONTRACT_TYPES},
    s.IS_ENTERPRISE: (0.0, 1.0),
}
"""Bounds every encoded value must respect; checked on real data by the feature-invariant check."""
