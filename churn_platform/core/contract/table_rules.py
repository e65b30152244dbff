"""Rules over a whole column or frame: mean, null rate, row count, presence, types, parsing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandera.pandas as pa

from churn_platform.core.contract.frame_view import (
    FrameView,
    as_float,
    dtype_compatible,
    py_value,
    uncoercible,
)
from churn_platform.core.contract.results import RuleResult
from churn_platform.core.contract.rules import Rule


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
        return self._result(passed, py_value(mean), self.bound(), 0, view.cases([], None), msg)

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
            bad = np.flatnonzero(uncoercible(view.frame[col], self.dtypes[col]))
            failing += len(bad)
            sample = view.cases(bad, None)
            sample["column"] = col
            sample["value"] = view.frame[col].iloc[bad[: view.sample_size]].astype(str).to_numpy()
            samples.append(sample)
        cases = view.joined(samples)
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
        cases = view.joined(samples)
        msg = (
            ", ".join(f"{n} unparseable value(s) in {c}" for c, n in counts.items())
            + "; fix the values or the mapping's value maps / read_options"
            if counts
            else "every value was readable as its column's type"
        )
        return self._result(not counts, counts, 0, failing, cases, msg)
