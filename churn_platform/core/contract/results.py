"""What evaluating the contract yields: severities, one ``RuleResult`` per rule, the error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from churn_platform.core.markdown import markdown_table

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
