"""The contract as a pandera schema, and the typed frame once the contract passed."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import pandas as pd
import pandera.pandas as pa

from churn_platform.core.contract.declare import ContractConfig, contract_rules, rule_names
from churn_platform.core.contract.evaluate import blocking_failures, evaluate_contract
from churn_platform.core.contract.results import ContractError, RuleResult
from churn_platform.core.contract.table_rules import RequiredColumnsRule
from churn_platform.core.mapping import MappedFrame
from churn_platform.core.spec import Spec


def pandera_schema(
    config: ContractConfig | None = None, *, spec: Spec, coerce: bool = True
) -> pa.DataFrameSchema:
    """The contract as a pandera schema generated from ``contract_rules`` of ``spec``.

    Each rule's check is named after the rule; WARN rules raise pandera warnings
    instead of errors. Column presence and dtype are pandera ``Column(required, dtype)``.
    """
    rules = contract_rules(config, spec=spec)
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


def pandera_failed_rules(errors: pa.errors.SchemaErrors, spec: Spec) -> set[str]:
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
    *,
    spec: Spec,
) -> pd.DataFrame:
    """The frame typed as ``spec.dtypes``, once the contract passed.

    Columns come in ``spec.all_columns`` order, then any extra columns. Raises
    ``ContractError`` listing every blocking failure with its evidence. The pandera
    schema then validates and coerces; WARN rules do not block.
    """
    if results is None:  # callers that already evaluated the contract pass their results
        results = evaluate_contract(frame, config, spec=spec)
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
