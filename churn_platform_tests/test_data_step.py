"""core.data_step and core.model_step: what the data and model assets check, say and log."""

from __future__ import annotations

import pandas as pd

from churn_platform.core import contract, data_step, model_step
from churn_platform.core.records import FEATURE_INVARIANTS
from churn_platform.core.spec import default_spec


def test_a_snapshot_without_rows_or_spec_columns_stops_with_the_columns_found():
    spec = default_spec()
    full = pd.DataFrame({c: [1] for c in spec.all_columns})
    assert data_step.missing_columns(full, spec) == []
    assert data_step.snapshot_problem(full, [], spec, "src") is None
    empty = full.iloc[:0]
    assert data_step.snapshot_problem(empty, [], spec, "src") == (
        f"src: the snapshot has no rows. Columns found: {list(full.columns)}. "
        "Nothing downstream runs; the last validated data is untouched."
    )
    lacking = full.drop(columns=[spec.id_column])
    missing = data_step.missing_columns(lacking, spec)
    assert missing == [spec.id_column]
    problem = data_step.snapshot_problem(lacking, missing, spec, "src")
    assert problem is not None and f"column(s) {missing} of the spec are missing" in problem
    checks = data_step.snapshot_checks(lacking, missing, spec, "src")
    assert checks["row_count_positive"][0] and not checks["schema_columns_present"][0]
    assert checks["schema_columns_present"][1]["missing_columns"] == spec.id_column


def test_snapshot_key_and_timings():
    now = pd.Timestamp("2026-01-02T03:04:05Z")
    key = data_step.snapshot_key("abcdef0123456789", now, "0badcafe-1234")
    assert key == "snapshots/snapshot_20260102T030405_abcdef012345_0badcafe.parquet"
    timings = data_step.Timings({"read": 0.12345})
    with timings.measure("hash"):
        pass
    assert set(timings.rounded()) == {"read", "hash"} and timings.rounded()["read"] == 0.123


def test_a_changed_spec_names_the_rules_on_both_sides():
    spec = default_spec()
    rules = set(contract.rule_names(spec))
    assert data_step.spec_changed(spec, rules, "churn.yaml") is None
    text = data_step.spec_changed(spec, {*rules, "old_rule"}, "churn.yaml")
    assert text is not None and "checks ['old_rule'] it lacks" in text and "churn.yaml" in text


def test_the_contract_metadata_counts_rules_and_warnings():
    spec = default_spec()
    rule = contract.RuleResult(
        "r1", False, contract.ERROR, "d", 1, 0, 3, pd.DataFrame(), message="3 bad"
    )
    fine = contract.RuleResult("r2", True, contract.ERROR, "d", 0, 0, 0, pd.DataFrame())
    assert data_step.blocking_failure([rule]).startswith(
        "1 blocking contract rule(s) failed: r1 (3 bad). No model is trained"
    )
    assert data_step.rule_metadata(fine)["failure_cases"] == "_no failing rows_"
    typed = pd.DataFrame({spec.target_column: [0, 1, 1, 1]})
    meta = data_step.validated_metadata(typed, [rule, fine], spec, "# Q\n## Columns\nx")
    assert meta == {
        "rules_passed": "1/2",
        "warnings": "r1",
        "churn_rate": 0.75,
        "quality_summary": "# Q\n",
    }


def test_a_spec_whose_checks_changed_since_loading_is_refused():
    spec = default_spec()
    names = model_step.model_checks.check_names(spec)
    assert model_step.checks_changed(spec, names) is None
    text = model_step.checks_changed(spec, [FEATURE_INVARIANTS])
    assert text is not None and text.endswith("reload the code location, then run again")
