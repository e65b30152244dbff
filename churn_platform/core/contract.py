"""The data contract a table spec declares, derived once.

``contract_rules(config, spec)`` is the single declaration, generated from the spec
(``core.spec``; default: the shipped churn spec): a list of rule objects, each with a
snake_case name (one Dagster asset check per rule), a severity (``ERROR`` blocks,
``WARN`` only reports), a description and one vectorised predicate (``violations``).
The rules follow the spec's columns: row count, presence, types, parseability, the
entity id's not-null and unique rules, ``<col>_in_range`` (both bounds),
``<col>_non_negative`` / ``<col>_at_least`` / ``<col>_at_most`` (one bound),
``<col>_mean_in_range``, ``<col>_in_set`` per categorical, ``<target>_in_set`` and a
``<col>_null_rate`` per column but the id. ``ContractConfig`` overrides bounds, limits and
severities at run time. Two things are generated from that list:

* ``evaluate_contract`` - the fast evaluator. It runs every rule (never stopping at
  the first failure) straight on numpy/pandas arrays and returns a ``RuleResult``
  per rule with the observed value, the bound, the failing row count and a sample of
  failing rows (the entity id plus the column).
* ``pandera_schema`` - the same rules as a pandera ``DataFrameSchema`` whose custom
  checks call the very same predicates and are named after the rules; ``WARN``
  rules become pandera warnings. ``validated_frame`` uses it to validate and coerce
  to ``spec.dtypes``.

Rules cope with frames that break the schema itself: a missing column fails
``required_columns_present`` and every rule needing it reports "column missing"; a
column of the wrong type fails ``column_types_match`` naming the column and its
dtype, while range rules read whatever values of it are numeric.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute

from churn_platform.core.mapping import MappedFrame
from churn_platform.core.markdown import markdown_table
from churn_platform.core.spec import NUMERIC_KINDS, Spec, SpecError, default_spec

Severity = Literal["ERROR", "WARN"]
ERROR: Severity = "ERROR"
WARN: Severity = "WARN"
SEVERITIES: tuple[str, ...] = (ERROR, WARN)
COLUMN_MISSING = "column missing"


class ContractError(ValueError):
    """Blocking contract rules failed; the message lists each rule and its evidence."""

    def __init__(self, message: str, results: Sequence[RuleResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


# Legacy example-specific ContractConfig fields: field -> (column, what it overrides).
# They override the spec's bound of that column; the spec must have it.
OVERRIDES: dict[str, tuple[str, str]] = {
    "tenure_months_range": ("tenure_months", "range"),
    "monthly_spend_range": ("monthly_spend", "range"),
    "last_login_hour_range": ("last_login_hour", "range"),
    "support_tickets_min": ("support_tickets", "min"),
    "monthly_spend_mean_range": ("monthly_spend", "mean_range"),
    "contract_types": ("contract_type", "allowed"),
    "regions": ("region", "allowed"),
    "churned_values": ("churned", "target"),
}


@dataclass(frozen=True)
class ContractConfig:
    """Run-time overrides of the contract the spec declares. ``None`` means "from the spec".

    ``tenure_months_range``, ``monthly_spend_range``, ``last_login_hour_range``,
    ``support_tickets_min``, ``monthly_spend_mean_range``, ``contract_types``, ``regions``
    and ``churned_values`` override the spec's bound for that column (the spec must have
    the column and that kind of bound). ``min_rows`` overrides ``dataset.min_rows``;
    ``default_null_rate_limit`` overrides ``dataset.max_null_rate`` (the limit of features
    without their own ``max_null_rate``). ``null_rate_limits`` overrides the limit (fraction
    0..1) of any spec column but the entity id (whose nulls are ``<id>_not_null``).
    ``severities`` overrides a rule's severity by rule name (``"ERROR"`` or ``"WARN"``).
    Names are checked against ``spec`` (default: the shipped spec).
    """

    tenure_months_range: tuple[float, float] | None = None
    monthly_spend_range: tuple[float, float] | None = None
    last_login_hour_range: tuple[float, float] | None = None
    support_tickets_min: float | None = None
    monthly_spend_mean_range: tuple[float, float] | None = None
    contract_types: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None
    churned_values: tuple[int, ...] | None = None
    min_rows: int | None = None
    default_null_rate_limit: float | None = None
    null_rate_limits: Mapping[str, float] = field(default_factory=dict)
    severities: Mapping[str, str] = field(default_factory=dict)
    failure_sample_size: int = 20
    spec: Spec | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "tenure_months_range",
            "monthly_spend_range",
            "last_login_hour_range",
            "monthly_spend_mean_range",
        ):
            pair = getattr(self, name)
            if pair is None:
                continue
            if len(pair) != 2 or not pair[0] <= pair[1]:
                raise ValueError(f"ContractConfig.{name} must be [low, high] with low <= high")
        limits = dict(self.null_rate_limits)
        if self.default_null_rate_limit is not None:
            limits = {"default": self.default_null_rate_limit, **limits}
        for col, limit in limits.items():
            if not 0 <= limit <= 1:
                raise ValueError(
                    f"ContractConfig null-rate limit for {col!r} must be a fraction in [0, 1], "
                    f"got {limit}"
                )
        bad_levels = {k: v for k, v in self.severities.items() if v not in SEVERITIES}
        if bad_levels:
            raise ValueError(
                f"ContractConfig.severities values must be 'ERROR' or 'WARN', got {bad_levels}"
            )
        if self.failure_sample_size < 0 or (self.min_rows is not None and self.min_rows < 0):
            raise ValueError("ContractConfig.failure_sample_size and min_rows must be >= 0")
        self.check_against(self.spec or default_spec())

    def check_against(self, spec: Spec) -> None:
        """Raise ``ValueError`` naming the key when an override does not fit ``spec``."""
        for key, (column, part) in OVERRIDES.items():
            if getattr(self, key) is not None:
                _check_override(spec, key, column, part)
        null_cols = null_rate_columns(spec)
        bad_cols = sorted(set(self.null_rate_limits) - set(null_cols))
        if bad_cols:
            raise ValueError(
                f"ContractConfig.null_rate_limits names {bad_cols}; use the spec's columns "
                f"{list(null_cols)} ({spec.id_column} nulls are {spec.id_column}_not_null)"
            )
        known = [rule.name for rule in _rules(self, spec)]
        bad_rules = sorted(set(self.severities) - set(known))
        if bad_rules:
            raise ValueError(
                f"ContractConfig.severities names unknown rule(s) {bad_rules}; known rules: {known}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, spec: Spec | None = None) -> ContractConfig:
        """Build from plain config (lists for ranges), rejecting unknown keys by name.

        Names (rules, columns) are checked against ``spec`` (default: the shipped spec).
        """
        data = dict(data or {})
        names = {f.name for f in fields(cls)} - {"spec"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"contract config has unknown key(s) {unknown}; known keys: {sorted(names)}"
            )
        tuples = {
            k: tuple(v)
            for k, v in data.items()
            if k.endswith(("_range", "_types", "regions", "_values")) and v is not None
        }
        return cls(**{**data, **tuples}, spec=spec)

    def severity(self, rule: str, default: Severity) -> Severity:
        """The configured severity of ``rule`` (``default`` when not overridden)."""
        return self.severities.get(rule, default)  # type: ignore[return-value]

    def null_rate_limit(self, column: str, spec: Spec | None = None) -> float:
        """The null-rate limit of ``column``: the override, else the spec's."""
        spec = spec or self.spec or default_spec()
        if column in self.null_rate_limits:
            return float(self.null_rate_limits[column])
        if (
            self.default_null_rate_limit is not None
            and column in spec.features
            and spec.features[column].nullable
            and spec.features[column].max_null_rate is None
        ):
            return float(self.default_null_rate_limit)
        return float(spec.null_rate_limit(column))


def _check_override(spec: Spec, key: str, column: str, part: str) -> None:
    if part == "target":
        if column != spec.target_column:
            raise ValueError(
                f"ContractConfig.{key} overrides the allowed values of {column!r}, but spec "
                f"{spec.name!r} names its target {spec.target_column!r}; remove {key} (the "
                "target is 0/1 after mapping)"
            )
        return
    if column not in spec.features:
        raise ValueError(
            f"ContractConfig.{key} overrides a bound of column {column!r}, which spec "
            f"{spec.name!r} does not have (features: {list(spec.features)}); remove {key} "
            "or set the bound in the spec"
        )
    feature = spec.features[column]
    has = {
        "range": feature.range is not None,
        "min": feature.range is not None and feature.range[0] is not None,
        "mean_range": feature.mean_range is not None,
        "allowed": feature.kind == "categorical",
    }[part]
    if not has:
        spec_key = {"min": "range", "allowed": "allowed"}.get(part, part)
        raise ValueError(
            f"ContractConfig.{key} overrides features.{column}.{spec_key}, which spec "
            f"{spec.name!r} does not declare; declare it in the spec (the rule and its asset "
            f"check come from the spec) or remove {key}"
        )


def null_rate_columns(spec: Spec | None = None) -> tuple[str, ...]:
    """Columns with a ``<column>_null_rate`` rule: every spec column but the entity id."""
    spec = spec or default_spec()
    return tuple(c for c in spec.all_columns if c != spec.id_column)


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields, not objects
class RuleResult:
    """The outcome of one contract rule, with its evidence."""

    name: str
    passed: bool
    severity: Severity
    description: str
    observed: Any  # JSON-safe: number, string, list or dict
    bound: Any  # JSON-safe
    failing_rows: int
    failure_cases: pd.DataFrame  # at most failure_sample_size rows: row, entity id, column
    column: str | None = None
    message: str = ""

    @property
    def blocking(self) -> bool:
        """True when the rule failed and its severity is ERROR."""
        return not self.passed and self.severity == ERROR

    def to_markdown(self) -> str:
        """The failure sample as a markdown table (a short note when there is none)."""
        if self.failure_cases.empty:
            return "_no failing rows_" if self.passed or self.failing_rows == 0 else "_no sample_"
        return markdown_table(self.failure_cases)

    def metadata(self) -> dict[str, str | int | float | bool | None]:
        """Flat, JSON-safe evidence (observed and bound as JSON text) for asset metadata."""
        return {
            "rule": self.name,
            "passed": self.passed,
            "severity": self.severity,
            "column": self.column,
            "observed": json.dumps(self.observed, default=str),
            "bound": json.dumps(self.bound, default=str),
            "failing_rows": self.failing_rows,
            "message": self.message,
            "failure_cases": self.to_markdown(),
        }


class FrameView:
    """One frame under evaluation, caching per-column arrays shared by several rules."""

    def __init__(
        self,
        frame: pd.DataFrame,
        conversion: Mapping[str, Any] | None = None,
        sample_size: int = 20,
        id_column: str = "customer_id",
        unmapped: Mapping[str, pd.DataFrame] | None = None,
    ) -> None:
        self.frame = frame
        self.n = len(frame)
        self.conversion = conversion
        self.sample_size = sample_size
        self.id_column = id_column
        # raw values a value map did not cover and typing could not keep (MappedFrame)
        self.unmapped = dict(unmapped or {})
        self._floats: dict[str, np.ndarray] = {}
        self._nulls: dict[str, np.ndarray] = {}

    def has(self, column: str) -> bool:
        """Whether ``column`` is in the frame."""
        return column in self.frame.columns

    def floats(self, column: str) -> np.ndarray:
        """The column as float64 with NaN for nulls and non-numeric values (cached)."""
        if column not in self._floats:
            self._floats[column] = as_float(self.frame[column])
        return self._floats[column]

    def nulls(self, column: str) -> np.ndarray:
        """Boolean mask of null cells in ``column`` (cached)."""
        if column not in self._nulls:
            self._nulls[column] = self.frame[column].isna().to_numpy(dtype=bool)
        return self._nulls[column]

    def cases(self, rows: np.ndarray | list[int], column: str | None) -> pd.DataFrame:
        """Failure sample for row positions ``rows``: row, the entity id and ``column``."""
        rows = np.asarray(rows, dtype=np.int64)[: self.sample_size]
        out = pd.DataFrame({"row": rows})
        if self.has(self.id_column):
            out[self.id_column] = self.frame[self.id_column].iloc[rows].to_numpy()
        if column and column != self.id_column and self.has(column):
            out[column] = self.frame[column].iloc[rows].to_numpy()
        return out


def as_float(series: pd.Series) -> np.ndarray:
    """A column as float64 values; nulls and values that are not numbers become NaN."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        series.dtype
    ):
        return np.full(len(series), np.nan)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _py(value: Any) -> Any:
    """A JSON-safe Python value (numpy scalars unwrapped, NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class Rule:
    """One contract rule: its identity, and how to evaluate it and express it in pandera."""

    name: str
    severity: Severity
    description: str
    column: str | None = None

    @property
    def col(self) -> str:
        """The rule's column, for rules that always have one."""
        if self.column is None:
            raise ValueError(f"contract rule {self.name!r} needs a column")
        return self.column

    def evaluate(self, view: FrameView) -> RuleResult:
        """Evaluate on ``view``; a missing column is a failure, never an exception."""
        if self.column is not None and not view.has(self.column):
            return self._result(
                False,
                COLUMN_MISSING,
                self.bound(),
                0,
                view.cases(np.array([], dtype=int), None),
                f"column {self.column!r} is missing from the frame",
            )
        return self._evaluate(view)

    def _evaluate(self, view: FrameView) -> RuleResult:
        raise NotImplementedError

    def bound(self) -> Any:
        """The rule's bound as JSON-safe data."""
        return None

    def pandera_check(self) -> pa.Check | None:
        """The rule as a named pandera check (None when pandera expresses it otherwise)."""
        return None

    def _result(
        self,
        passed: bool,
        observed: Any,
        bound: Any,
        failing: int,
        cases: pd.DataFrame,
        message: str,
    ) -> RuleResult:
        return RuleResult(
            name=self.name,
            passed=bool(passed),
            severity=self.severity,
            description=self.description,
            observed=observed,
            bound=bound,
            failing_rows=int(failing),
            failure_cases=cases,
            column=self.column,
            message=f"{'passed' if passed else 'FAILED'}: {message}",
        )

    def _check(self, fn: Callable[[Any], Any], **kwargs: Any) -> pa.Check:
        return pa.Check(
            fn,
            name=self.name,
            ignore_na=False,
            raise_warning=self.severity == WARN,
            **kwargs,
        )


@dataclass(frozen=True)
class RowRule(Rule):
    """A rule that flags individual rows through one vectorised predicate."""

    numeric: bool = False  # the predicate reads the column as floats

    def violations(self, values: Any) -> np.ndarray:
        """Boolean mask of failing rows (``values``: float array if numeric, else a Series)."""
        raise NotImplementedError

    def _values(self, series: pd.Series, view: FrameView | None = None) -> Any:
        if self.numeric:
            return view.floats(self.col) if view is not None else as_float(series)
        return series

    def observe(self, view: FrameView, mask: np.ndarray) -> Any:
        """What to report as observed (default: the failing row count)."""
        return int(mask.sum())

    def order(self, view: FrameView, rows: np.ndarray) -> np.ndarray:
        """Order of failing rows in the sample (default: file order)."""
        return rows

    def fast_violations(self, view: FrameView) -> np.ndarray:
        """Same mask as ``violations``, reusing the view's cached arrays."""
        return np.asarray(self.violations(self._values(view.frame[self.column], view)), bool)

    def _evaluate(self, view: FrameView) -> RuleResult:
        assert self.column is not None
        mask = self.fast_violations(view)
        failing = int(mask.sum())
        rows = self.order(view, np.flatnonzero(mask)) if failing else np.array([], dtype=int)
        observed = self.observe(view, mask)
        msg = f"{failing} row(s) of {view.n} violate: {self.description}"
        return self._result(
            failing == 0, observed, self.bound(), failing, view.cases(rows, self.column), msg
        )

    def pandera_check(self) -> pa.Check:
        """Pandera element-wise check calling the same predicate."""

        def check(series: pd.Series) -> pd.Series:
            return pd.Series(~self.violations(self._values(series)), index=series.index)

        return self._check(check)


@dataclass(frozen=True)
class NotNullRule(RowRule):
    """Every row has a value in ``column``."""

    def violations(self, values: pd.Series) -> np.ndarray:
        """Null cells."""
        return values.isna().to_numpy(dtype=bool)

    def fast_violations(self, view: FrameView) -> np.ndarray:
        """The view's cached null mask."""
        return view.nulls(self.col)

    def bound(self) -> Any:
        """No nulls allowed."""
        return 0


@dataclass(frozen=True)
class UniqueRule(RowRule):
    """No two rows share a non-null value of ``column``."""

    def violations(self, values: pd.Series) -> np.ndarray:
        """Every row whose value occurs more than once (nulls excluded)."""
        return (values.duplicated(keep=False) & values.notna()).to_numpy(dtype=bool)

    def fast_violations(self, view: FrameView) -> np.ndarray:
        """Duplicates masked with the view's cached null mask."""
        # pandas' hash table over the values; an Arrow count_distinct first was slower here
        # (converting Python strings to Arrow costs more than the check saves, and a frame
        # with duplicates then paid both: benchmarks/bench_contract.py, 0.31 s -> 0.62 s)
        values = view.frame[self.column]
        return values.duplicated(keep=False).to_numpy(dtype=bool) & ~view.nulls(self.col)

    def observe(self, view: FrameView, mask: np.ndarray) -> Any:
        """Number of distinct values that occur more than once."""
        if not mask.any():
            return 0
        return int(view.frame[self.column].iloc[np.flatnonzero(mask)].nunique())

    def order(self, view: FrameView, rows: np.ndarray) -> np.ndarray:
        """Group duplicates together so the sample shows pairs."""
        ids = view.frame[self.column].iloc[rows].to_numpy(dtype=object)
        return rows[np.argsort(ids.astype(str), kind="stable")]

    def bound(self) -> Any:
        """No duplicates allowed."""
        return 0


@dataclass(frozen=True)
class RangeRule(RowRule):
    """Non-null values of ``column`` lie in [low, high] (``high`` None: no upper bound)."""

    low: float = -math.inf
    high: float | None = None
    numeric: bool = True

    def violations(self, values: np.ndarray) -> np.ndarray:
        """Values below ``low`` or above ``high`` (NaN compares False, so nulls pass)."""
        bad = values < self.low
        if self.high is not None:
            bad |= values > self.high
        return bad

    def observe(self, view: FrameView, mask: np.ndarray) -> Any:
        """Observed min and max of the numeric values, and the failing count."""
        values = view.floats(self.col)
        has_values = bool(np.isfinite(values).any()) if len(values) else False
        return {
            "min": _py(np.nanmin(values)) if has_values else None,
            "max": _py(np.nanmax(values)) if has_values else None,
            "failing": int(mask.sum()),
        }

    def bound(self) -> Any:
        """[low, high] (None for an open side)."""
        return [None if self.low == -math.inf else _py(self.low), _py(self.high)]


@dataclass(frozen=True)
class SetRule(RowRule):
    """Non-null values of ``column`` are among ``allowed``."""

    allowed: tuple[Any, ...] = ()

    def violations(self, values: Any) -> np.ndarray:
        """Non-null values outside the allowed set."""
        if self.numeric:
            return ~np.isnan(values) & ~np.isin(values, np.asarray(self.allowed, dtype=float))
        return (values.notna() & ~values.isin(self.allowed)).to_numpy(dtype=bool)

    def fast_violations(self, view: FrameView) -> np.ndarray:
        """Same as ``violations``, with the view's cached null mask.

        Rows whose raw value the mapping's value map did not cover, and that typing turned
        null (a target value like ``maybe`` the spec does not map), fail too.
        """
        if self.numeric:
            mask = self.violations(view.floats(self.col))
        else:
            outside = ~view.frame[self.column].isin(self.allowed).to_numpy(dtype=bool)
            mask = outside & ~view.nulls(self.col)
        raw = view.unmapped.get(self.col)
        if raw is not None and len(raw):
            mask = mask.copy()
            mask[raw["row"].to_numpy(dtype=np.int64)] = True
        return mask

    def _shown(self, view: FrameView, rows: np.ndarray) -> pd.Series:
        """The values of ``rows`` as text, raw where the mapping lost them."""
        shown = pd.Series(
            view.frame[self.column].iloc[rows].astype(str).to_numpy(dtype=object), index=rows
        )
        raw = view.unmapped.get(self.col)
        if raw is not None and len(raw):
            lost = pd.Series(raw["value"].astype(str).to_numpy(), index=raw["row"].to_numpy())
            shown.update(lost[lost.index.isin(rows)])
        return shown

    def observe(self, view: FrameView, mask: np.ndarray) -> Any:
        """Counts of up to 10 most frequent values outside the set."""
        if not mask.any():
            return {}
        counts = self._shown(view, np.flatnonzero(mask)).value_counts().head(10)
        return {str(k): int(v) for k, v in counts.items()}

    def _evaluate(self, view: FrameView) -> RuleResult:
        result = super()._evaluate(view)
        if result.passed:
            return result
        cases = result.failure_cases
        if self.col in view.unmapped and len(cases):
            cases = cases.copy()
            cases[self.col] = self._shown(view, cases["row"].to_numpy()).to_numpy()
        values = ", ".join(repr(v) for v in result.observed)
        return replace(
            result,
            failure_cases=cases,
            message=f"{result.message}; values outside the set: {values}",
        )

    def bound(self) -> Any:
        """The allowed values."""
        return [_py(v) for v in self.allowed]


@dataclass(frozen=True)
class MeanRangeRule(Rule):
    """The mean of the non-null numeric values of ``column`` lies in [low, high]."""

    low: float = -math.inf
    high: float = math.inf

    def mean(self, values: np.ndarray) -> float:
        """Mean of non-NaN values (NaN when there are none)."""
        finite = ~np.isnan(values)
        return float(values[finite].mean()) if finite.any() else math.nan

    def _evaluate(self, view: FrameView) -> RuleResult:
        mean = self.mean(view.floats(self.col))
        passed = not math.isnan(mean) and self.low <= mean <= self.high
        msg = f"mean of {self.column} is {mean:.4g}, bound [{self.low}, {self.high}]"
        return self._result(passed, _py(mean), self.bound(), 0, view.cases([], None), msg)

    def bound(self) -> Any:
        """[low, high]."""
        return [self.low, self.high]

    def pandera_check(self) -> pa.Check:
        """Pandera column check returning one boolean."""
        return self._check(lambda series: self.low <= self.mean(as_float(series)) <= self.high)


@dataclass(frozen=True)
class NullRateRule(Rule):
    """The share of null cells in ``column`` is at most ``limit``."""

    limit: float = 0.0

    def _evaluate(self, view: FrameView) -> RuleResult:
        nulls = view.nulls(self.col)
        count = int(nulls.sum())
        rate = count / view.n if view.n else 0.0
        passed = rate <= self.limit
        cases = view.cases(np.flatnonzero(nulls) if not passed else np.array([], int), self.column)
        msg = f"{count} null(s) in {self.column} = rate {rate:.4f}, limit {self.limit}"
        return self._result(passed, rate, self.limit, 0 if passed else count, cases, msg)

    def bound(self) -> Any:
        """The maximum null rate."""
        return self.limit

    def pandera_check(self) -> pa.Check:
        """Pandera column check returning one boolean."""
        return self._check(
            lambda series: float(series.isna().mean() if len(series) else 0.0) <= self.limit
        )


@dataclass(frozen=True)
class RowCountRule(Rule):
    """The frame has at least ``min_rows`` rows."""

    min_rows: int = 1

    def _evaluate(self, view: FrameView) -> RuleResult:
        passed = view.n >= self.min_rows
        msg = f"{view.n} row(s), need at least {self.min_rows}"
        return self._result(passed, view.n, self.bound(), 0, view.cases([], None), msg)

    def bound(self) -> Any:
        """Minimum rows."""
        return self.min_rows

    def pandera_check(self) -> pa.Check:
        """Pandera dataframe-level check."""
        return self._check(lambda frame: len(frame) >= self.min_rows)


@dataclass(frozen=True)
class RequiredColumnsRule(Rule):
    """Every spec column is present (pandera: ``Column(required=True)``)."""

    columns: tuple[str, ...] = ()

    def _evaluate(self, view: FrameView) -> RuleResult:
        missing = [c for c in self.columns if not view.has(c)]
        msg = f"missing {missing}; found {list(view.frame.columns)}" if missing else "all present"
        return self._result(not missing, missing, list(self.columns), 0, view.cases([], None), msg)

    def bound(self) -> Any:
        """The required columns."""
        return list(self.columns)


@dataclass(frozen=True)
class ColumnTypesRule(Rule):
    """Present spec columns have a dtype compatible with the spec's (``Spec.dtypes``).

    Compatible means the same kind: any integer dtype for ``Int64``, integer or float
    for ``float64``, bool/boolean for ``boolean``, tz-naive datetime64 for dates, and
    string dtype or object holding only strings for ``string``. Pandera expresses it
    as ``Column(dtype)`` with coercion.
    """

    dtypes: Mapping[str, str] = field(default_factory=dict)

    def _evaluate(self, view: FrameView) -> RuleResult:
        wrong = {
            c: str(view.frame[c].dtype)
            for c, expected in self.dtypes.items()
            if view.has(c) and not dtype_compatible(view.frame[c], expected)
        }
        failing, samples = 0, []
        for col in wrong:
            bad = np.flatnonzero(_uncoercible(view.frame[col], self.dtypes[col]))
            failing += len(bad)
            sample = view.cases(bad, None)
            sample["column"] = col
            sample["value"] = view.frame[col].iloc[bad[: view.sample_size]].astype(str).to_numpy()
            samples.append(sample)
        cases = (
            pd.concat(samples, ignore_index=True).head(view.sample_size)
            if samples
            else view.cases([], None)
        )
        msg = (
            "; ".join(f"{c} has dtype {d}, expected {self.dtypes[c]}" for c, d in wrong.items())
            or "all present columns have canonical dtypes"
        )
        bound = {c: self.dtypes[c] for c in wrong} if wrong else dict(self.dtypes)
        return self._result(not wrong, wrong, bound, failing, cases, msg)

    def bound(self) -> Any:
        """Expected dtype per column."""
        return dict(self.dtypes)


@dataclass(frozen=True)
class ParseableRule(Rule):
    """No value was unreadable as its column's type when the frame was mapped.

    Needs the ``MappedFrame`` conversion report; on a plain DataFrame it passes with
    observed ``None`` (nothing was converted, ``column_types_match`` covers types).
    """

    def _evaluate(self, view: FrameView) -> RuleResult:
        if view.conversion is None:
            return self._result(
                True, None, 0, 0, view.cases([], None), "no conversion report (not a MappedFrame)"
            )
        counts = {c: r.unparseable for c, r in view.conversion.items() if r.unparseable}
        failing = sum(counts.values())
        samples = []
        for col in counts:
            ex = view.conversion[col].examples.copy()
            ex.insert(len(ex.columns) - 1, "column", col)
            samples.append(ex)
        cases = (
            pd.concat(samples, ignore_index=True).head(view.sample_size)
            if samples
            else view.cases([], None)
        )
        msg = (
            ", ".join(f"{n} unparseable value(s) in {c}" for c, n in counts.items())
            + "; fix the values or the mapping's value maps / read_options"
            if counts
            else "every value was readable as its column's type"
        )
        return self._result(not counts, counts, 0, failing, cases, msg)


def dtype_compatible(series: pd.Series, expected: str) -> bool:
    """Whether ``series`` has the same kind of dtype as canonical ``expected``."""
    dtype = series.dtype
    api = pd.api.types
    if expected == "string":
        if isinstance(dtype, pd.StringDtype):
            return True
        return dtype == np.dtype(object) and api.infer_dtype(series, skipna=True) in (
            "string",
            "empty",
        )
    if expected == "Int64":
        return api.is_integer_dtype(dtype) and not api.is_bool_dtype(dtype)
    if expected == "float64":
        return (api.is_float_dtype(dtype) or api.is_integer_dtype(dtype)) and not api.is_bool_dtype(
            dtype
        )
    if expected == "boolean":
        return api.is_bool_dtype(dtype)
    if expected.startswith("datetime64"):
        return api.is_datetime64_dtype(dtype) and not isinstance(dtype, pd.DatetimeTZDtype)
    return str(dtype) == expected


def _uncoercible(series: pd.Series, expected: str) -> np.ndarray:
    """Mask of non-null cells that cannot be read as ``expected`` (type-rule evidence)."""
    notna = series.notna().to_numpy(dtype=bool)
    if expected in ("Int64", "float64"):
        values = as_float(series)
        bad = np.isnan(values)
        if expected == "Int64":
            with np.errstate(invalid="ignore"):
                bad |= values != np.round(values)
        return notna & bad
    if expected == "boolean":
        values = series.to_numpy(dtype=object)
        return notna & ~np.fromiter(
            (isinstance(v, bool | np.bool_) for v in values), bool, len(values)
        )
    if expected.startswith("datetime64"):
        return notna & pd.to_datetime(series, errors="coerce").isna().to_numpy(dtype=bool)
    if expected == "string":
        values = series.to_numpy(dtype=object)
        return notna & ~np.fromiter((isinstance(v, str) for v in values), bool, len(values))
    return notna


def _num(value: float | None) -> float | int | None:
    """A bound as written: 600.0 -> 600 (descriptions and bounds read like the spec)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def rule_slug(column: str) -> str:
    """``column`` as part of a rule (and Dagster check) name: letters, digits and ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", column)


def contract_rules(config: ContractConfig | None = None, spec: Spec | None = None) -> list[Rule]:
    """The contract the spec declares: every rule, in the order reports and checks list them.

    Order: row count, column presence, types, parseability, the id's not-null and unique
    rules, numeric ranges (both bounds, then one-sided bounds), column means, categorical
    sets, the target's 0/1 set, then a null-rate rule per column but the id. ``config``
    overrides bounds, limits and severities, never which rules exist (their names are the
    asset checks defined when the definitions load).
    """
    spec = spec or (config.spec if config is not None else None) or default_spec()
    c = config or ContractConfig(spec=spec)
    if c.spec is not spec and (c.spec is None or c.spec.hash != spec.hash):
        c.check_against(spec)
    return _rules(c, spec)


def _override(c: ContractConfig, column: str, part: str) -> Any:
    for key, (col, what) in OVERRIDES.items():
        if col == column and what == part and getattr(c, key) is not None:
            return getattr(c, key)
    return None


def _rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    e = ERROR

    def sev(name: str) -> Severity:
        return c.severity(name, e)

    idc = spec.id_column
    ids = rule_slug(idc)
    min_rows = spec.dataset.min_rows if c.min_rows is None else c.min_rows
    rules: list[Rule] = [
        RowCountRule(
            "row_count_positive",
            sev("row_count_positive"),
            f"the snapshot has at least {min_rows} row(s)",
            min_rows=min_rows,
        ),
        RequiredColumnsRule(
            "required_columns_present",
            sev("required_columns_present"),
            "every canonical column is present",
            columns=spec.all_columns,
        ),
        ColumnTypesRule(
            "column_types_match",
            sev("column_types_match"),
            "columns have their canonical dtypes",
            dtypes=spec.dtypes,
        ),
        ParseableRule(
            "values_parseable",
            sev("values_parseable"),
            "every value could be read as its column's type when mapped",
        ),
        NotNullRule(f"{ids}_not_null", sev(f"{ids}_not_null"), f"{idc} is never null", idc),
        UniqueRule(f"{ids}_unique", sev(f"{ids}_unique"), f"{idc} is unique", idc),
    ]
    both: list[Rule] = []
    one_sided: list[Rule] = []
    for col, feature in spec.features.items():
        if feature.kind not in NUMERIC_KINDS or feature.range is None:
            continue
        low, high = feature.range
        over = _override(c, col, "range")
        if over is not None:
            low, high = over
        over_min = _override(c, col, "min")
        if over_min is not None:
            low = over_min
        lo, hi = _num(low), _num(high)
        slug = rule_slug(col)
        # the name follows the spec's shape, so run-time overrides never rename a check
        spec_low, spec_high = feature.range
        if spec_low is not None and spec_high is not None:
            name, text, group = f"{slug}_in_range", f"{col} in [{lo}, {hi}]", both
        elif spec_high is None and spec_low is not None:
            suffix = "non_negative" if spec_low == 0 else "at_least"
            name, text, group = f"{slug}_{suffix}", f"{col} >= {lo}", one_sided
        elif spec_low is None and spec_high is not None:
            name, text, group = f"{slug}_at_most", f"{col} <= {hi}", one_sided
        else:
            continue  # [null, null]: no bound at all
        group.append(
            RangeRule(
                name,
                sev(name),
                text,
                col,
                low=-math.inf if lo is None else lo,
                high=hi,
            )
        )
    rules += both + one_sided
    for col, feature in spec.features.items():
        if feature.mean_range is None:
            continue
        over = _override(c, col, "mean_range")
        low_m, high_m = over if over is not None else feature.mean_range
        name = f"{rule_slug(col)}_mean_in_range"
        rules.append(
            MeanRangeRule(
                name,
                sev(name),
                f"mean {col} in [{_num(low_m)}, {_num(high_m)}]",
                col,
                low=_num(low_m),  # type: ignore[arg-type]  # a mean range has both sides
                high=_num(high_m),  # type: ignore[arg-type]
            )
        )
    for col, feature in spec.features.items():
        if feature.kind != "categorical":
            continue
        over = _override(c, col, "allowed")
        allowed = tuple(over if over is not None else feature.allowed or ())
        name = f"{rule_slug(col)}_in_set"
        rules.append(SetRule(name, sev(name), f"{col} in {list(allowed)}", col, allowed=allowed))
    target = spec.target_column
    over = _override(c, target, "target")
    values = tuple(over if over is not None else (0, 1))
    name = f"{rule_slug(target)}_in_set"
    rules.append(
        SetRule(
            name, sev(name), f"{target} in {list(values)}", target, allowed=values, numeric=True
        )
    )
    for col in null_rate_columns(spec):
        name = f"{rule_slug(col)}_null_rate"
        limit = c.null_rate_limit(col, spec)
        rules.append(
            NullRateRule(name, sev(name), f"null rate of {col} <= {limit}", col, limit=limit)
        )
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(
            f"spec {spec.name!r} gives several contract rules the same name {dupes}; rename "
            "the columns behind them (rule names are column names plus a suffix)"
        )
    return rules


def rule_names(spec: Spec | None = None) -> list[str]:
    """Names of every contract rule of ``spec`` (stable: one Dagster asset check each)."""
    return [r.name for r in contract_rules(None, spec)]


def evaluate_contract(
    frame: pd.DataFrame | MappedFrame,
    config: ContractConfig | None = None,
    spec: Spec | None = None,
) -> list[RuleResult]:
    """Evaluate every rule of ``spec``'s contract on ``frame`` (mapped, or a plain DataFrame).

    Never stops at the first failure and never raises on a broken frame: a missing
    column or a wrong dtype is reported by the rules. A ``MappedFrame`` also lets
    ``values_parseable`` report values that could not be converted, and the set rules
    name values the spec's value maps do not cover.
    """
    spec = spec or (config.spec if config is not None else None) or default_spec()
    rules = contract_rules(config, spec)
    conversion = None
    unmapped: Mapping[str, pd.DataFrame] | None = None
    if isinstance(frame, MappedFrame):
        conversion = frame.conversion_report
        unmapped = frame.unmapped_cells
        frame = frame.frame
    sample = config.failure_sample_size if config is not None else 20
    view = FrameView(frame, conversion, sample, spec.id_column, unmapped)
    return [rule.evaluate(view) for rule in rules]


def blocking_failures(results: Sequence[RuleResult]) -> list[RuleResult]:
    """Results that failed with severity ERROR."""
    return [r for r in results if r.blocking]


def pandera_schema(
    config: ContractConfig | None = None, *, coerce: bool = True, spec: Spec | None = None
) -> pa.DataFrameSchema:
    """The contract as a pandera schema generated from ``contract_rules`` of ``spec``.

    Each rule's check is named after the rule; WARN rules raise pandera warnings
    instead of errors. Column presence and dtype are pandera ``Column(required, dtype)``.
    """
    spec = spec or (config.spec if config is not None else None) or default_spec()
    rules = contract_rules(config, spec)
    per_column: dict[str, list[pa.Check]] = {c: [] for c in spec.all_columns}
    frame_checks: list[pa.Check] = []
    required: tuple[str, ...] = ()
    for rule in rules:
        if isinstance(rule, RequiredColumnsRule):
            required = rule.columns
        check = rule.pandera_check()
        if check is None:
            continue
        (per_column[rule.column] if rule.column else frame_checks).append(check)
    columns = {
        col: pa.Column(
            spec.dtypes[col],
            checks=per_column[col],
            nullable=True,
            required=col in required,
            coerce=coerce,
        )
        for col in spec.all_columns
    }
    return pa.DataFrameSchema(
        columns, checks=frame_checks, coerce=coerce, strict=False, name=f"{spec.name}_contract"
    )


def pandera_failed_rules(errors: pa.errors.SchemaErrors, spec: Spec | None = None) -> set[str]:
    """Rule names behind pandera's failure cases (dtype/presence map to their rules)."""
    names = set(rule_names(spec))
    failed = set()
    for check in errors.failure_cases["check"].astype(str):
        if check in names:
            failed.add(check)
        elif check == "column_in_dataframe":
            failed.add("required_columns_present")
        elif check.startswith(("dtype(", "coerce_dtype(")):
            failed.add("column_types_match")
        else:
            failed.add(check)
    return failed


def validated_frame(
    frame: pd.DataFrame | MappedFrame,
    config: ContractConfig | None = None,
    results: Sequence[RuleResult] | None = None,
    spec: Spec | None = None,
) -> pd.DataFrame:
    """The frame typed as ``spec.dtypes``, once the contract passed.

    Columns come in ``spec.all_columns`` order, then any extra columns. Raises
    ``ContractError`` listing every blocking failure with its evidence. The pandera
    schema then validates and coerces; WARN rules do not block.
    """
    spec = spec or (config.spec if config is not None else None) or default_spec()
    if results is None:  # callers that already evaluated the contract pass their results
        results = evaluate_contract(frame, config, spec)
    blocking = blocking_failures(results)
    if blocking:
        lines = [
            f"- {r.name}: {r.message} (observed {json.dumps(r.observed, default=str)}, "
            f"bound {json.dumps(r.bound, default=str)})"
            for r in blocking
        ]
        raise ContractError(
            f"{len(blocking)} blocking contract rule(s) failed:\n" + "\n".join(lines), results
        )
    data = frame.frame if isinstance(frame, MappedFrame) else frame
    schema = pandera_schema(config, spec=spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=pa.errors.SchemaWarning)
        try:
            typed = schema.validate(data, lazy=True)
        except pa.errors.SchemaErrors as exc:  # the fast path and pandera disagree: a bug
            raise ContractError(
                f"pandera rejected a frame the fast evaluator passed: "
                f"{sorted(pandera_failed_rules(exc, spec))}",
                results,
            ) from exc
    order = list(spec.all_columns) + [c for c in typed.columns if c not in spec.all_columns]
    # selecting columns copies the frame: at 10M rows a copy is 1.5 GB, so only when needed
    return typed if list(typed.columns) == order else typed[order]


def data_version(frame: pd.DataFrame | MappedFrame) -> str:
    """Content hash (sha256 hex) of the rows in order, the column names and dtypes.

    Each column is hashed through its bytes, never through Python objects: numbers, dates
    and booleans as their fixed-width values, nullable columns as values plus null mask,
    text as Arrow's UTF-8 buffers. The bytes are the same in every process and on every
    run; one changed value, a renamed column or a changed dtype gives a new version.
    """
    if isinstance(frame, MappedFrame):
        frame = frame.frame
    digest = hashlib.sha256()
    header = [[str(c), str(t)] for c, t in frame.dtypes.items()]
    digest.update(json.dumps(header).encode())
    digest.update(str(len(frame)).encode())
    for i in range(frame.shape[1]):
        for part in _column_bytes(frame.iloc[:, i]):
            # length-prefixed, so bytes cannot slide from one part or column to the next
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def _column_bytes(series: pd.Series) -> list[Any]:
    """Byte buffers that stand for the column's values and nulls (no copy where the values
    already sit in one fixed-width array)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        return [_raw(series.to_numpy())]
    if isinstance(dtype, pd.DatetimeTZDtype):
        return [_raw(series.array.asi8)]
    nulls = _raw(series.isna().to_numpy(dtype=bool))
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # the nullable Int64 / Float64 / boolean
    if isinstance(numpy_dtype, np.dtype) and numpy_dtype.kind in "biuf":
        return [nulls, _raw(series.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0)))]
    if isinstance(dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy(dtype=np.int64)
        return [_raw(codes), *_column_bytes(pd.Series(dtype.categories))]
    # Arrow-backed text converts as is; Python strings convert fastest from their object array
    arrow_backed = str(getattr(dtype, "storage", "")).startswith("pyarrow")
    source = series if arrow_backed else series.to_numpy(dtype=object)
    try:  # text: Arrow's offsets and UTF-8 bytes; a null is an empty slot plus the mask
        text = pyarrow.array(source, type=pyarrow.large_string(), from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, pyarrow.ArrowNotImplementedError):
        # mixed objects (numbers among strings, ...): pandas' keyed hash, also stable
        hashes = pd.util.hash_pandas_object(series, index=False, categorize=False)
        return [nulls, _raw(hashes.to_numpy(dtype=np.uint64))]
    _, offset_buffer, data = text.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[
        text.offset : text.offset + len(text) + 1
    ]
    first, last = int(offsets[0]), int(offsets[-1])
    body = np.frombuffer(data, dtype=np.uint8)[first:last] if data is not None else _raw([])
    return [nulls, _raw(offsets - first), body]


def _raw(values: Any) -> np.ndarray:
    """The values' bytes as one contiguous uint8 array (a view when already contiguous)."""
    array = np.ascontiguousarray(values)
    if array.dtype.kind in "mM":
        array = array.view(np.int64)
    return array.reshape(-1).view(np.uint8)
