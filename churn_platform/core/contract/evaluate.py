"""The fast evaluator: every rule straight on numpy/pandas arrays, never stopping early."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from churn_platform.core.contract.declare import ContractConfig, contract_rules
from churn_platform.core.contract.frame_view import FrameView
from churn_platform.core.contract.results import RuleResult
from churn_platform.core.mapping import MappedFrame
from churn_platform.core.spec import Spec


def evaluate_contract(
    frame: pd.DataFrame | MappedFrame,
    config: ContractConfig | None = None,
    *,
    spec: Spec,
) -> list[RuleResult]:
    """Evaluate every rule of ``spec``'s contract on ``frame`` (mapped, or a plain DataFrame).

    Never stops at the first failure and never raises on a broken frame: a missing
    column or a wrong dtype is reported by the rules. A ``MappedFrame`` also lets
    ``values_parseable`` report values that could not be converted, and the set rules
    name values the spec's value maps do not cover.
    """
    rules = contract_rules(config, spec=spec)
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
