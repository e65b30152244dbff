"""The rule base classes and the row rules: each flags failing rows with one vectorised predicate.

Every rule evaluates straight on a ``FrameView`` (the fast path) and expresses itself as a
named pandera check calling the same predicate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from churn_platform.core.contract.frame_view import FrameView, as_float, py_value
from churn_platform.core.contract.results import COLUMN_MISSING, WARN, RuleResult, Severity


@dataclass(frozen=True)
class Rule:
    """One contract rule: its identity, and how to evaluate it and express it in pandera."""

    name: str
    severity: Severity
    description: str
    column: str | None = None
    fix: str = ""  # how to accept data the rule rejects (the key to edit), for its message

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
        result = self._evaluate(view)
        if result.passed or not self.fix:
            return result
        return replace(result, message=f"{result.message}; {self.fix}")

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
            "min": py_value(np.nanmin(values)) if has_values else None,
            "max": py_value(np.nanmax(values)) if has_values else None,
            "failing": int(mask.sum()),
        }

    def bound(self) -> Any:
        """[low, high] (None for an open side)."""
        return [None if self.low == -math.inf else py_value(self.low), py_value(self.high)]


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
        return [py_value(v) for v in self.allowed]
