"""Feature code as scikit-learn transformers, so the saved pipeline is the whole model.

Each transformer learns its state in ``fit`` (frequency tables, a reference date),
applies it in ``transform`` and names its outputs in ``get_feature_names_out``.
``build_feature_transformer(spec)`` composes them in a ``ColumnTransformer``, one step
per feature kind of the table spec (``plan_feature_steps``); the model pipeline
(``core.training``) puts an estimator after it. Serving loads the same pipeline, so
serving cannot compute features differently from training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
from sklearn.utils.validation import check_is_fitted

from churn_platform.core.spec import Spec, default_spec


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


# Steps of the shipped spec keep the names its models were saved with (the generic names
# below would rename them; the outputs are the same either way).
_LEGACY_STEP_NAMES: dict[tuple[str, tuple[str, ...]], str] = {
    ("cyclical", ("last_login_hour",)): "hour_cyclical",
    ("onehot", ("contract_type",)): "contract_onehot",
    ("date", ("signup_date",)): "signup_days",
    ("boolean", ("is_enterprise",)): "enterprise",
}


@dataclass(frozen=True)
class FeatureStep:
    """One ``ColumnTransformer`` step planned from a spec: its transformer and output names."""

    group: str  # cyclical, onehot, frequency, native, date, boolean or numeric
    name: str
    transformer: Any
    columns: tuple[str, ...]
    outputs: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]  # bounds of bounded outputs (the invariant check)

    @property
    def native(self) -> bool:
        """Whether the outputs are category codes for the estimator's native support."""
        return self.group == "native"


def _step(
    group: str,
    generic_name: str,
    transformer: Any,
    columns: tuple[str, ...],
    outputs: tuple[str, ...],
    ranges: dict[str, tuple[float, float]],
) -> FeatureStep:
    name = _LEGACY_STEP_NAMES.get((group, columns), generic_name)
    return FeatureStep(group, name, transformer, columns, outputs, ranges)


def _categories(spec: Spec, columns: Sequence[str]) -> list[list[str]]:
    return [list(spec.features[c].allowed or ()) for c in columns]


def plan_feature_steps(spec: Spec | None = None, *, native: bool = True) -> list[FeatureStep]:
    """The feature steps a spec asks for, in output order.

    Cyclical features (one step per period) -> sin/cos; categoricals -> one-hot over
    ``allowed`` (unknown -> all zero), frequency learned at fit, and/or ``native`` category
    codes (an ordinal code per allowed value, unknown or missing -> NaN) for an estimator
    with native categorical support; ``native=False`` (estimators without it) one-hot encodes
    those instead. Dates -> days since the newest date seen at fit; booleans -> 0/1;
    numeric and integer features pass through as floats. Missing values stay NaN.
    """
    spec = spec or default_spec()
    return [
        *_cyclical_steps(spec),
        *_categorical_steps(spec, native),
        *_date_boolean_numeric_steps(spec),
    ]


def _cyclical_steps(spec: Spec) -> list[FeatureStep]:
    """One sin/cos step per period of the cyclical features."""
    periods: dict[float, list[str]] = {}
    for name in spec.of_kind("cyclical"):
        periods.setdefault(float(spec.features[name].period or 0), []).append(name)
    steps = []
    for period, cols in periods.items():
        columns = tuple(cols)
        generic = "cyclical" if len(periods) == 1 else f"cyclical_{period:g}"
        outputs = tuple(f"{c}{suffix}" for c in columns for suffix in CyclicalEncoder._suffixes)
        steps.append(
            _step(
                "cyclical",
                generic,
                CyclicalEncoder(period=int(period) if period.is_integer() else period),
                columns,
                outputs,
                {o: (-1.0, 1.0) for o in outputs},
            )
        )
    return steps


def _categorical_steps(spec: Spec, native: bool) -> list[FeatureStep]:
    """One-hot, frequency and native-code steps over the categoricals that ask for each."""
    categorical = spec.of_kind("categorical")

    def encoded(how: str) -> tuple[str, ...]:
        return tuple(c for c in categorical if how in spec.features[c].encoding)

    onehot = tuple(
        c
        for c in categorical
        if "onehot" in spec.features[c].encoding
        or (not native and "native" in spec.features[c].encoding)
    )
    frequency = encoded("frequency")
    native_cols = encoded("native") if native else ()
    steps = []
    if onehot:
        steps.append(_onehot_step(spec, onehot))
    if frequency:
        outputs = tuple(f"{c}_freq" for c in frequency)
        steps.append(
            _step(
                "frequency",
                "category_frequency",
                FrequencyEncoder(),
                frequency,
                outputs,
                {o: (0.0, 1.0) for o in outputs},
            )
        )
    if native_cols:
        steps.append(_native_step(spec, native_cols))
    return steps


def _onehot_step(spec: Spec, columns: tuple[str, ...]) -> FeatureStep:
    """One 0/1 column per allowed value of each of ``columns`` (unknown -> all zero)."""
    categories = _categories(spec, columns)
    outputs = tuple(
        f"{c}_{v}" for c, values in zip(columns, categories, strict=True) for v in values
    )
    return _step(
        "onehot",
        "onehot",
        make_pipeline(
            StringCategories(),
            OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False),
        ),
        columns,
        outputs,
        {o: (0.0, 1.0) for o in outputs},
    )


def _native_step(spec: Spec, columns: tuple[str, ...]) -> FeatureStep:
    """An ordinal code per allowed value of each of ``columns`` (unknown or missing -> NaN)."""
    categories = _categories(spec, columns)
    return _step(
        "native",
        "native_categories",
        make_pipeline(
            StringCategories(),
            OrdinalEncoder(
                categories=categories,
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
            ),
        ),
        columns,
        columns,
        {c: (0.0, float(len(v) - 1)) for c, v in zip(columns, categories, strict=True)},
    )


def _date_boolean_numeric_steps(spec: Spec) -> list[FeatureStep]:
    """Days since the newest date seen at fit; booleans as 0/1; numbers passed through."""
    steps = []
    dates = spec.of_kind("date")
    if dates:
        steps.append(
            _step(
                "date",
                "days_since",
                DaysSinceReference(),
                dates,
                tuple(f"{c}_days_since_ref" for c in dates),
                {},
            )
        )
    booleans = spec.of_kind("boolean")
    if booleans:
        steps.append(
            _step(
                "boolean",
                "boolean",
                BooleanToFloat(),
                booleans,
                booleans,
                {c: (0.0, 1.0) for c in booleans},
            )
        )
    numeric = spec.of_kind("numeric", "integer")
    if numeric:
        steps.append(_step("numeric", "numeric", NumericPassthrough(), numeric, numeric, {}))
    return steps


def build_feature_transformer(
    spec: Spec | None = None, *, native: bool = True
) -> ColumnTransformer:
    """The feature step of every churn model: one ``ColumnTransformer`` over the spec's features.

    The steps are ``plan_feature_steps(spec, native=native)``'s. For the shipped spec:

    - ``last_login_hour`` -> sin/cos (cyclical, period 24);
    - ``contract_type`` -> one-hot over the known contract types (unknown -> all zero);
    - ``contract_type``, ``region`` -> frequency encoding learned at fit;
    - ``signup_date`` -> days since the newest signup seen at fit;
    - ``is_enterprise`` -> 0/1; numeric columns as floats. Missing values stay NaN.
    """
    return ColumnTransformer(
        [
            (step.name, step.transformer, list(step.columns))
            for step in plan_feature_steps(spec, native=native)
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def native_category_indices(spec: Spec | None = None) -> list[int]:
    """Output positions of the native category codes (the estimator's ``categorical_features``)."""
    out: list[int] = []
    position = 0
    for step in plan_feature_steps(spec, native=True):
        if step.native:
            out.extend(range(position, position + len(step.outputs)))
        position += len(step.outputs)
    return out


def feature_ranges(
    spec: Spec | None = None, *, native: bool = True
) -> dict[str, tuple[float, float]]:
    """Bounds every bounded encoded value must respect (cyclical, one-hot, frequency, boolean,
    native codes); checked on real data by the feature-invariant check."""
    steps = plan_feature_steps(spec, native=native)
    ranges: dict[str, tuple[float, float]] = {}
    # cyclical first, then frequency, one-hot, booleans, native codes: the order the check
    # has always reported them in
    for kind in ("cyclical", "frequency", "onehot", "boolean", "native"):
        for step in steps:
            if step.group == kind:
                ranges.update(step.ranges)
    return ranges


def nan_allowed_sources(spec: Spec | None = None) -> dict[str, str]:
    """Bounded output -> input column, for outputs that are NaN exactly when the input is
    missing (cyclical and native codes); every other bounded output must never be NaN."""
    out: dict[str, str] = {}
    for step in plan_feature_steps(spec):
        if step.group in ("native", "cyclical"):
            per_column = len(step.outputs) // max(len(step.columns), 1)
            for i, output in enumerate(step.outputs):
                out[output] = step.columns[i // per_column]
    return out


FEATURE_RANGES: dict[str, tuple[float, float]] = feature_ranges()
"""The shipped spec's bounded features and their bounds (``feature_ranges(spec)`` for others)."""
