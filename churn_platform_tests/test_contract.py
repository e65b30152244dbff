"""The data contract: every rule, each injected defect, severities, pandera parity, versions."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from churn_platform.core import schema as s
from churn_platform.core.contract import (
    COLUMN_MISSING,
    ContractConfig,
    ContractError,
    RuleResult,
    blocking_failures,
    data_version,
    evaluate_contract,
    pandera_failed_rules,
    pandera_schema,
    rule_names,
    validated_frame,
)
from churn_platform.core.mapping import MappedFrame, apply_mapping
from churn_platform.core.quality_report import profile_frame, render_quality_report
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate

N = 3000
SPEC = default_spec()


def mapped(**spec: object) -> MappedFrame:
    """A typed synthetic frame with the given defects."""
    return apply_mapping(generate(SyntheticSpec(n_rows=N, seed=5, **spec)), spec=SPEC)  # type: ignore[arg-type]


def failed(results: list[RuleResult]) -> set[str]:
    return {r.name for r in results if not r.passed}


def by_name(results: list[RuleResult]) -> dict[str, RuleResult]:
    return {r.name: r for r in results}


def test_clean_synthetic_data_passes_every_rule_mapped_or_not() -> None:
    for frame in (mapped(), generate(SyntheticSpec(n_rows=N, seed=5))):
        results = evaluate_contract(frame, spec=SPEC)
        assert [r.name for r in results] == rule_names(spec=SPEC)
        assert failed(results) == set(), [r.message for r in results if not r.passed]
        assert all(r.failing_rows == 0 and r.failure_cases.empty for r in results)


def test_rule_names_are_unique_snake_case_and_cover_the_contract() -> None:
    names = rule_names(spec=SPEC)
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names)
    for expected in (
        "row_count_positive",
        "required_columns_present",
        "column_types_match",
        "customer_id_not_null",
        "customer_id_unique",
        "tenure_months_in_range",
        "monthly_spend_in_range",
        "last_login_hour_in_range",
        "support_tickets_non_negative",
        "monthly_spend_mean_in_range",
        "contract_type_in_set",
        "region_in_set",
        "churned_in_set",
        "churned_null_rate",
        "region_null_rate",
    ):
        assert expected in names


def test_null_customer_ids_fail_not_null_with_the_null_rows() -> None:
    frame = mapped(null_rate={s.CUSTOMER_ID: 0.01})
    nulls = np.flatnonzero(frame.frame[s.CUSTOMER_ID].isna().to_numpy())
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {"customer_id_not_null"}
    rule = by_name(results)["customer_id_not_null"]
    assert rule.failing_rows == rule.observed == len(nulls) > 0
    assert rule.blocking
    assert rule.failure_cases["row"].tolist() == nulls[:20].tolist()


def test_duplicate_ids_fail_unique_and_the_sample_holds_the_duplicated_ids() -> None:
    frame = mapped(duplicate_ids=4)
    counts = Counter(frame.frame[s.CUSTOMER_ID].tolist())
    dupes = {i for i, c in counts.items() if c > 1}
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {"customer_id_unique"}
    rule = by_name(results)["customer_id_unique"]
    assert rule.observed == len(dupes) > 0
    assert rule.failing_rows == sum(counts[i] for i in dupes)
    assert set(rule.failure_cases[s.CUSTOMER_ID]) == dupes
    assert "| row | customer_id |" in rule.to_markdown()


@pytest.mark.parametrize(
    ("column", "bad_value", "rule"),
    [
        (s.TENURE_MONTHS, -5, "tenure_months_in_range"),
        (s.MONTHLY_SPEND, -50.0, "monthly_spend_in_range"),
        (s.LAST_LOGIN_HOUR, 31, "last_login_hour_in_range"),
        (s.SUPPORT_TICKETS, -1, "support_tickets_non_negative"),
    ],
)
def test_out_of_range_values_fail_their_range_rule_only(
    column: str, bad_value: float, rule: str
) -> None:
    frame = mapped(out_of_range={column: 7})
    offenders = frame.frame.loc[frame.frame[column] == bad_value, s.CUSTOMER_ID]
    assert len(offenders) == 7
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {rule}
    result = by_name(results)[rule]
    assert result.failing_rows == 7 and result.blocking
    assert set(result.failure_cases[s.CUSTOMER_ID]) == set(offenders)
    assert set(result.failure_cases[column]) == {bad_value}
    assert result.observed["min" if bad_value < 0 else "max"] == bad_value


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        (s.CONTRACT_TYPE, "weekly", "contract_type_in_set"),
        (s.REGION, "mars", "region_in_set"),
        (s.TARGET, 2, "churned_in_set"),
    ],
)
def test_values_outside_a_set_fail_the_set_rule(column: str, value: object, rule: str) -> None:
    frame = mapped()
    frame.frame.loc[[10, 20, 30], column] = value
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {rule}
    result = by_name(results)[rule]
    assert result.failing_rows == 3
    assert result.observed == {str(value): 3}
    assert result.failure_cases[s.CUSTOMER_ID].tolist() == ["C0000010", "C0000020", "C0000030"]


def test_spend_mean_outside_its_range_fails_the_mean_rule() -> None:
    high = evaluate_contract(mapped(spend_shift=500.0), spec=SPEC)
    assert failed(high) == {"monthly_spend_mean_in_range"}
    assert by_name(high)["monthly_spend_mean_in_range"].observed > 400
    low = evaluate_contract(mapped(spend_shift=-300.0), spec=SPEC)
    assert failed(low) == {"monthly_spend_mean_in_range"}
    assert by_name(low)["monthly_spend_mean_in_range"].observed < 20
    assert by_name(low)["monthly_spend_mean_in_range"].bound == [20, 400]


def test_null_rate_blocks_by_default_and_warn_severity_only_alerts() -> None:
    frame = mapped(null_rate={s.REGION: 0.2})
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {"region_null_rate"}
    rule = by_name(results)["region_null_rate"]
    assert rule.severity == "ERROR" and rule.blocking
    assert 0.15 < rule.observed < 0.25 and rule.bound == 0.05
    with pytest.raises(ContractError, match="region_null_rate"):
        validated_frame(frame, spec=SPEC)

    lenient = ContractConfig(severities={"region_null_rate": "WARN"}, spec=SPEC)
    warned = by_name(evaluate_contract(frame, lenient, spec=SPEC))["region_null_rate"]
    assert not warned.passed and not warned.blocking
    assert blocking_failures(evaluate_contract(frame, lenient, spec=SPEC)) == []
    typed = validated_frame(frame, lenient, spec=SPEC)
    assert typed[s.REGION].isna().sum() == warned.failing_rows
    relaxed = ContractConfig(null_rate_limits={s.REGION: 0.5}, spec=SPEC)
    assert failed(evaluate_contract(frame, relaxed, spec=SPEC)) == set()


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (s.REGION, {"region_null_rate"}),
        (s.MONTHLY_SPEND, {"monthly_spend_null_rate", "monthly_spend_mean_in_range"}),
        (s.TARGET, {"churned_null_rate"}),
    ],
)
def test_an_all_null_column_fails_its_null_rate_rule(column: str, expected: set[str]) -> None:
    frame = mapped(null_rate={column: 1.0})
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == expected
    assert by_name(results)[f"{column}_null_rate"].observed == 1.0
    assert by_name(results)[f"{column}_null_rate"].failing_rows == N


def test_null_rate_rules_block_by_default() -> None:
    results = by_name(evaluate_contract(mapped(null_rate={s.TARGET: 0.01}), spec=SPEC))
    assert results["churned_null_rate"].severity == "ERROR"
    assert results["churned_null_rate"].blocking
    assert results["tenure_months_null_rate"].severity == "ERROR"


def test_wrong_type_fails_the_type_rule_naming_column_and_dtype() -> None:
    frame = generate(SyntheticSpec(n_rows=N, seed=5))
    frame[s.TENURE_MONTHS] = frame[s.TENURE_MONTHS].astype(object)
    frame.loc[[4, 9], s.TENURE_MONTHS] = "twelve"
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {"column_types_match"}
    rule = by_name(results)["column_types_match"]
    assert rule.observed == {s.TENURE_MONTHS: "object"}
    assert rule.bound == {s.TENURE_MONTHS: "Int64"}
    assert "tenure_months has dtype object, expected Int64" in rule.message
    assert rule.failing_rows == 2
    assert rule.failure_cases["value"].tolist() == ["twelve", "twelve"]
    assert rule.failure_cases[s.CUSTOMER_ID].tolist() == ["C0000004", "C0000009"]


def test_a_missing_column_fails_presence_and_its_rules_report_column_missing() -> None:
    frame = mapped().frame.drop(columns=[s.REGION])
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {"required_columns_present", "region_in_set", "region_null_rate"}
    presence = by_name(results)["required_columns_present"]
    assert presence.observed == [s.REGION]
    assert by_name(results)["region_in_set"].observed == COLUMN_MISSING
    with pytest.raises(ContractError, match="required_columns_present"):
        validated_frame(frame, spec=SPEC)


def test_unparseable_values_from_mapping_fail_values_parseable_with_raw_values() -> None:
    raw = generate(SyntheticSpec(n_rows=N, seed=5)).astype(str)
    raw.loc[[3, 8], s.MONTHLY_SPEND] = "12,50"
    frame = apply_mapping(raw, spec=SPEC)
    results = evaluate_contract(frame, spec=SPEC)
    assert failed(results) == {"values_parseable"}
    rule = by_name(results)["values_parseable"]
    assert rule.observed == {s.MONTHLY_SPEND: 2} and rule.failing_rows == 2
    assert rule.failure_cases[s.CUSTOMER_ID].tolist() == ["C0000003", "C0000008"]
    assert rule.failure_cases["value"].tolist() == ["12,50", "12,50"]
    # a plain DataFrame has no conversion report: the rule cannot fail on it
    assert by_name(evaluate_contract(frame.frame, spec=SPEC))["values_parseable"].passed


def test_empty_frame_fails_row_count_and_nothing_crashes() -> None:
    frame = mapped().frame.iloc[0:0]
    results = evaluate_contract(frame, spec=SPEC)
    assert "row_count_positive" in failed(results)
    assert by_name(results)["row_count_positive"].observed == 0


def test_every_rule_fails_together_not_just_the_first() -> None:
    frame = mapped(
        null_rate={s.CUSTOMER_ID: 0.01},
        duplicate_ids=3,
        out_of_range={s.TENURE_MONTHS: 2, s.LAST_LOGIN_HOUR: 2},
    )
    frame.frame.loc[[1], s.REGION] = "mars"
    assert {
        "customer_id_not_null",
        "customer_id_unique",
        "tenure_months_in_range",
        "last_login_hour_in_range",
        "region_in_set",
    } <= failed(evaluate_contract(frame, spec=SPEC))


def _pandera_failures(frame: pd.DataFrame) -> set[str]:
    """Rules pandera fails (errors) or warns about, by rule name."""
    schema = pandera_schema(spec=SPEC)
    names: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            names |= pandera_failed_rules(exc, spec=SPEC)
    for warning in caught:
        names |= set(re.findall(r"<Check (\w+)", str(warning.message)))
    return names


@pytest.mark.parametrize(
    "make",
    [
        lambda: mapped().frame,
        lambda: mapped(null_rate={s.CUSTOMER_ID: 0.01, s.REGION: 0.2}).frame,
        lambda: mapped(duplicate_ids=3, out_of_range={s.MONTHLY_SPEND: 2}).frame,
        lambda: mapped(spend_shift=500.0, out_of_range={s.SUPPORT_TICKETS: 1}).frame,
        lambda: mapped(null_rate={s.TARGET: 0.05}).frame.assign(contract_type="weekly"),
    ],
)
def test_pandera_schema_and_fast_evaluator_agree(make: Callable[[], pd.DataFrame]) -> None:
    frame = make()
    assert _pandera_failures(frame) == failed(evaluate_contract(frame, spec=SPEC))


def test_pandera_schema_reports_wrong_types_and_missing_columns_by_rule() -> None:
    frame = mapped().frame.drop(columns=[s.REGION])
    frame[s.TENURE_MONTHS] = "twelve"
    assert {"required_columns_present", "column_types_match"} <= _pandera_failures(frame)


def test_validated_frame_has_canonical_dtypes_and_order() -> None:
    raw = generate(SyntheticSpec(n_rows=N, seed=5))
    typed = validated_frame(raw[list(reversed(raw.columns))], spec=SPEC)
    assert list(typed.columns) == list(s.ALL_COLUMNS)
    assert {c: str(t) for c, t in typed.dtypes.items()} == s.CANONICAL_DTYPES


def test_validated_frame_lists_every_blocking_failure() -> None:
    frame = mapped(duplicate_ids=2, out_of_range={s.TENURE_MONTHS: 1})
    with pytest.raises(ContractError) as info:
        validated_frame(frame, spec=SPEC)
    assert "customer_id_unique" in str(info.value)
    assert "tenure_months_in_range" in str(info.value)
    assert {r.name for r in info.value.results if r.blocking} == {
        "customer_id_unique",
        "tenure_months_in_range",
    }


def test_contract_config_rejects_unknown_names_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown rule\(s\) \['customer_id_uniq'\]"):
        ContractConfig(severities={"customer_id_uniq": "WARN"}, spec=SPEC)
    with pytest.raises(ValueError, match="'ERROR' or 'WARN'"):
        ContractConfig(severities={"customer_id_unique": "warning"}, spec=SPEC)
    with pytest.raises(ValueError, match=r"names \['customer_id'\]"):
        ContractConfig(null_rate_limits={s.CUSTOMER_ID: 0.1}, spec=SPEC)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['tenure_range'\]"):
        ContractConfig.from_dict({"tenure_range": [0, 10]}, spec=SPEC)
    config = ContractConfig.from_dict(
        {"tenure_months_range": [0, 48], "regions": ["north"]}, spec=SPEC
    )
    assert config.tenure_months_range == (0, 48) and config.regions == ("north",)


def test_a_failing_rule_names_the_spec_key_that_accepts_the_new_data() -> None:
    frame = mapped()
    frame.frame.loc[[1, 2], s.MONTHLY_SPEND] = 20_000.0
    frame.frame.loc[[3], s.REGION] = "mars"
    results = by_name(evaluate_contract(frame, spec=SPEC))
    spend = results["monthly_spend_in_range"]
    assert not spend.passed
    assert "edit features.monthly_spend.range in the spec file" in spend.message
    assert "features.region.allowed" in results["region_in_set"].message
    shifted = by_name(evaluate_contract(mapped(spend_shift=500.0), spec=SPEC))
    assert "features.monthly_spend.mean_range" in shifted["monthly_spend_mean_in_range"].message
    nulls = by_name(evaluate_contract(mapped(null_rate={s.REGION: 0.2}), spec=SPEC))
    assert "features.region.max_null_rate" in nulls["region_null_rate"].message
    # a run-time override, not the spec, set the failing bound: name the override
    config = ContractConfig(monthly_spend_range=(0, 100), spec=SPEC)
    overridden = by_name(evaluate_contract(frame, config, spec=SPEC))["monthly_spend_in_range"]
    assert "contract config key monthly_spend_range" in overridden.message
    assert (
        "spec file"
        not in by_name(evaluate_contract(mapped(), spec=SPEC))["monthly_spend_in_range"].message
    )


def test_config_thresholds_are_used() -> None:
    config = ContractConfig(tenure_months_range=(0, 12), spec=SPEC)
    rule = by_name(evaluate_contract(mapped(), config, spec=SPEC))["tenure_months_in_range"]
    assert not rule.passed and rule.bound == [0, 12]
    assert rule.failing_rows == int((mapped().frame[s.TENURE_MONTHS] > 12).sum())


def test_data_version_is_stable_and_sensitive_to_one_value() -> None:
    first = data_version(generate(SyntheticSpec(n_rows=N, seed=5)))
    assert first == data_version(generate(SyntheticSpec(n_rows=N, seed=5)))
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    changed = generate(SyntheticSpec(n_rows=N, seed=5))
    changed.loc[1234, s.MONTHLY_SPEND] += 0.01
    assert data_version(changed) != first
    renamed = generate(SyntheticSpec(n_rows=N, seed=5)).rename(columns={s.REGION: "area"})
    assert data_version(renamed) != first
    assert data_version(mapped()) == data_version(mapped().frame)


def test_data_version_is_the_same_in_another_process() -> None:
    code = (
        "from churn_platform.core.contract import data_version;"
        "from churn_platform.core.synthetic import SyntheticSpec, generate;"
        f"print(data_version(generate(SyntheticSpec(n_rows={N}, seed=5))))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert other == data_version(generate(SyntheticSpec(n_rows=N, seed=5)))


def test_quality_report_shows_every_rule_the_version_and_failure_samples() -> None:
    frame = mapped(out_of_range={s.LAST_LOGIN_HOUR: 2}, null_rate={s.REGION: 0.1})
    results = evaluate_contract(
        frame, ContractConfig(severities={"region_null_rate": "WARN"}, spec=SPEC), spec=SPEC
    )
    offender = frame.frame.loc[frame.frame[s.LAST_LOGIN_HOUR] == 31, s.CUSTOMER_ID].iloc[0]
    summary = {**profile_frame(frame.frame), "source": {"kind": "synthetic"}}
    report = render_quality_report(results, summary, data_version(frame))
    assert data_version(frame) in report
    assert "**BLOCKED**: 1 blocking rule(s) failed" in report
    for name in rule_names(spec=SPEC):
        assert f"| {name} |" in report
    assert "### last_login_hour_in_range (ERROR)" in report
    assert "### region_null_rate (WARN)" in report
    assert offender in report
    assert "| monthly_spend | float64 |" in report
