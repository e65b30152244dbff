"""The data side reads the spec: contract rules, mapping, data assets and load errors follow it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_platform.core.contract import (
    ContractConfig,
    ContractError,
    contract_rules,
    evaluate_contract,
    pandera_schema,
    rule_names,
    validated_frame,
)
from churn_platform.core.mapping import apply_mapping
from churn_platform.core.spec import Spec, default_spec, parse_spec
from churn_platform.resources.environments import resources_for_environment
from churn_platform_tests.pipeline import checks, materialized, run_week, step_error

REPO = Path(__file__).resolve().parent.parent

# A team's own table: other names, text numbers with blanks, a yes/no target, 3 categoricals.
SAAS_SPEC = """
name: saas
entity_id:
  column: account
  source: Account ID
target:
  column: left
  source: Churned?
  positive: ["yes", "Yes"]
  negative: ["no", "No"]
features:
  seats:
    kind: integer
    source: Seats
    range: [1, 500]
  spend:
    kind: numeric
    source: Monthly Spend
    range: [0, null]
    mean_range: [10, 200]
  discount:
    kind: numeric
    range: [null, 0.5]
  age_days:
    kind: integer
    range: [30, null]
  plan:
    kind: categorical
    allowed: [basic, pro, enterprise]
    values: {"Basic": basic, "Pro": pro, "Enterprise": enterprise}
  channel:
    kind: categorical
    allowed: [web, sales]
    max_null_rate: 0.2
  country:
    kind: categorical
    allowed: [de, fr, us]
    nullable: false
holdout:
  fraction: 0.3
  salt: saas-v1
"""

SAAS_RULES = [
    "row_count_positive",
    "required_columns_present",
    "column_types_match",
    "values_parseable",
    "account_not_null",
    "account_unique",
    "seats_in_range",
    "spend_non_negative",
    "discount_at_most",
    "age_days_at_least",
    "spend_mean_in_range",
    "plan_in_set",
    "channel_in_set",
    "country_in_set",
    "left_in_set",
    "seats_null_rate",
    "spend_null_rate",
    "discount_null_rate",
    "age_days_null_rate",
    "plan_null_rate",
    "channel_null_rate",
    "country_null_rate",
    "left_null_rate",
]

DEFAULT_RULES = [
    "row_count_positive",
    "required_columns_present",
    "column_types_match",
    "values_parseable",
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
    "signup_date_null_rate",
    "tenure_months_null_rate",
    "monthly_spend_null_rate",
    "contract_type_null_rate",
    "is_enterprise_null_rate",
    "region_null_rate",
    "support_tickets_null_rate",
    "last_login_hour_null_rate",
    "churned_null_rate",
]


@pytest.fixture
def saas() -> Spec:
    return parse_spec(SAAS_SPEC)


def saas_table(n: int = 400, seed: int = 1) -> pd.DataFrame:
    """The team's raw table as a CSV would hand it over: every cell text, some blanks."""
    rng = np.random.default_rng(seed)
    spend = rng.uniform(20, 150, n).round(2).astype(str).astype(object)
    spend[rng.choice(n, 8, replace=False)] = ""  # blanks in numeric text
    return pd.DataFrame(
        {
            "Account ID": [f"A{i:05d}" for i in range(n)],
            "Seats": rng.integers(1, 300, n).astype(str),
            "Monthly Spend": spend,
            "discount": rng.uniform(0, 0.4, n).round(3).astype(str),
            "age_days": rng.integers(30, 2000, n).astype(str),
            "plan": rng.choice(["Basic", "Pro", "Enterprise"], n),
            "channel": rng.choice(["web", "sales"], n),
            "country": rng.choice(["de", "fr", "us"], n),
            "Churned?": rng.choice(["yes", "no", "No"], n),
            "notes": "free text nobody maps",
        }
    )


def failed(results) -> set[str]:
    return {r.name for r in results if not r.passed}


def by_name(results) -> dict:
    return {r.name: r for r in results}


def test_the_default_spec_keeps_todays_rule_names_in_todays_order() -> None:
    assert rule_names(default_spec()) == DEFAULT_RULES


def test_a_spec_of_another_shape_gets_rules_named_after_its_columns(saas: Spec) -> None:
    assert rule_names(saas) == SAAS_RULES
    described = {r.name: r.description for r in contract_rules(spec=saas)}
    assert described["seats_in_range"] == "seats in [1, 500]"
    assert described["spend_non_negative"] == "spend >= 0"
    assert described["discount_at_most"] == "discount <= 0.5"
    assert described["age_days_at_least"] == "age_days >= 30"
    assert described["spend_mean_in_range"] == "mean spend in [10, 200]"
    assert described["left_in_set"] == "left in [0, 1]"
    assert described["channel_null_rate"] == "null rate of channel <= 0.2"
    assert described["country_null_rate"] == "null rate of country <= 0.0"
    assert described["spend_null_rate"] == "null rate of spend <= 0.05"


def test_good_data_of_that_shape_maps_and_passes_every_rule(saas: Spec) -> None:
    mapped = apply_mapping(saas_table(), spec=saas)
    assert list(mapped.frame.columns) == list(saas.all_columns)  # "notes" dropped
    assert mapped.dropped_columns == ["notes"]
    assert mapped.conversion_report["spend"].blanks == 8
    results = evaluate_contract(mapped, spec=saas)
    assert [r.name for r in results] == SAAS_RULES
    assert failed(results) == set(), [r.message for r in results if not r.passed]
    typed = validated_frame(mapped, spec=saas)
    assert list(typed.columns) == list(saas.all_columns)
    assert {c: str(t) for c, t in typed.dtypes.items()} == saas.dtypes
    assert set(typed["left"].unique()) == {0, 1}
    assert set(typed["plan"].unique()) == {"basic", "pro", "enterprise"}
    # pandera, generated from the same rules, agrees on the typed frame
    pandera_schema(spec=saas).validate(typed, lazy=True)


def test_bad_data_of_that_shape_fails_the_rules_with_evidence(saas: Spec) -> None:
    raw = saas_table()
    raw.loc[[5, 6], "Seats"] = "900"  # out of range
    raw.loc[[7, 8, 9], "plan"] = "Gold"  # a category the spec does not allow
    raw.loc[[11, 12], "Churned?"] = "maybe"  # a target value the spec does not map
    raw.loc[13, "discount"] = "0.9"
    mapped = apply_mapping(raw, spec=saas)
    results = by_name(evaluate_contract(mapped, spec=saas))
    assert {"seats_in_range", "plan_in_set", "left_in_set", "discount_at_most"} <= failed(
        results.values()
    )

    seats = results["seats_in_range"]
    assert seats.failing_rows == 2 and seats.observed["max"] == 900 and seats.bound == [1, 500]
    assert seats.failure_cases["account"].tolist() == ["A00005", "A00006"]

    plan = results["plan_in_set"]
    assert plan.observed == {"Gold": 3}
    assert "'Gold'" in plan.message

    target = results["left_in_set"]
    assert target.blocking and target.failing_rows == 2
    assert target.observed == {"maybe": 2}
    assert "'maybe'" in target.message
    assert target.failure_cases["account"].tolist() == ["A00011", "A00012"]
    assert target.failure_cases["left"].tolist() == ["maybe", "maybe"]
    assert results["discount_at_most"].bound == [None, 0.5]

    with pytest.raises(ContractError, match="left_in_set"):
        validated_frame(mapped, spec=saas)


def test_contract_config_overrides_fit_the_spec_or_name_the_key(saas: Spec) -> None:
    relaxed = ContractConfig.from_dict(
        {"severities": {"plan_in_set": "WARN"}, "null_rate_limits": {"country": 0.1}}, spec=saas
    )
    raw = saas_table()
    raw.loc[[1], "plan"] = "Gold"
    results = by_name(evaluate_contract(apply_mapping(raw, spec=saas), relaxed, spec=saas))
    assert not results["plan_in_set"].passed and not results["plan_in_set"].blocking
    assert results["country_null_rate"].bound == 0.1
    with pytest.raises(ValueError, match=r"tenure_months_range.*'tenure_months'.*saas"):
        ContractConfig(tenure_months_range=(0, 10), spec=saas)
    with pytest.raises(ValueError, match=r"unknown rule\(s\) \['region_in_set'\]"):
        ContractConfig(severities={"region_in_set": "WARN"}, spec=saas)
    with pytest.raises(ValueError, match=r"null_rate_limits names \['account'\]"):
        ContractConfig(null_rate_limits={"account": 0.1}, spec=saas)
    # on the default spec the example's keys still override its bounds
    default = default_spec()
    config = ContractConfig.from_dict(
        {"tenure_months_range": [0, 48], "regions": ["north"]}, spec=default
    )
    rules = {r.name: r for r in contract_rules(config, spec=default)}
    assert rules["tenure_months_in_range"].description == "tenure_months in [0, 48]"
    assert rules["region_in_set"].description == "region in ['north']"


def test_an_explicit_mapping_is_merged_over_the_specs(saas: Spec) -> None:
    raw = saas_table(50).rename(columns={"plan": "Tier"})
    mapped = apply_mapping(
        raw, {"columns": {"Tier": "plan"}, "values": {"plan": {"Pro": "enterprise"}}}, spec=saas
    )
    assert mapped.renamed["Tier"] == "plan" and mapped.renamed["Account ID"] == "account"
    assert set(mapped.frame["plan"]) <= {"basic", "enterprise"}  # Pro re-mapped over the spec


def _write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_SPECS = {
    "unknown_kind": (
        SAAS_SPEC.replace("kind: integer\n    source: Seats", "kind: whole\n    source: Seats"),
        "features.seats.kind: unknown kind 'whole'",
    ),
    "slice_unknown_value": (
        SAAS_SPEC + "slices:\n  - name: tier\n    column: plan\n    values: [basic, gold]\n",
        "slice 'tier': value(s) ['gold'] not allowed for 'plan'",
    ),
    "invariance_unknown_column": (
        SAAS_SPEC
        + "invariances:\n  - name: cheaper\n    feature: price\n    step: 1\n"
        + "    direction: decrease\n",
        "invariance 'cheaper' changes 'price', not a feature",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_bad_spec_fails_definitions_validate_with_the_key_first(
    case: str, tmp_path: Path
) -> None:
    text, expected = BAD_SPECS[case]
    spec_file = _write_spec(tmp_path / "bad.yaml", text)
    env = {
        **os.environ,
        "CHURN_SPEC": str(spec_file),
        "CHURN_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert expected in output, output
    # the message comes first: not Dagster's "Error occurred during the loading" wrapper
    assert f"InvalidSettingsError: CHURN_SPEC='{spec_file}': invalid spec:" in output, output
    assert "Error occurred during the loading of Dagster definitions" not in output


def _data_assets(spec: Spec) -> list[dg.AssetsDefinition]:
    """The data assets of the model the environment configures now (``spec``: its spec)."""
    from churn_platform.config import load_config
    from churn_platform.defs import data

    model = load_config().model()
    assert model.spec.hash == spec.hash
    return data.build(model)


def _materialize(spec: Spec, names: list[str]) -> dg.ExecuteInJobResult:
    instance = dg.DagsterInstance.ephemeral()
    return dg.materialize(
        _data_assets(spec),
        selection=names,
        instance=instance,
        resources=resources_for_environment(),
        raise_on_error=False,
        partition_key=run_week(instance),
    )


@pytest.fixture
def saas_source(churn_home: Path, monkeypatch: pytest.MonkeyPatch):
    """CHURN_SPEC at the saas spec, CHURN_SOURCE at a CSV the test writes."""

    def use(frame: pd.DataFrame, spec_text: str = SAAS_SPEC) -> Spec:
        csv = churn_home / "accounts.csv"
        frame.to_csv(csv, index=False)
        spec_file = _write_spec(churn_home / "saas.yaml", spec_text)
        monkeypatch.setenv("CHURN_SPEC", str(spec_file))
        monkeypatch.setenv("CHURN_SOURCE", "file")
        monkeypatch.setenv("CHURN_SOURCE_PATH", str(csv))
        return parse_spec(spec_text)

    return use


def test_the_data_assets_run_on_the_specs_table_with_its_checks(saas_source) -> None:
    spec = saas_source(saas_table(1000))
    result = _materialize(spec, ["churn_snapshot", "validated_churn_data", "holdout_set"])
    assert result.success, step_error(result)
    found = checks(result)
    contract_checks = [n for (a, n) in found if a == "validated_churn_data"]
    assert contract_checks == SAAS_RULES
    assert all(c.passed for c in found.values())
    meta = {
        e.event_specific_data.materialization.asset_key.to_user_string(): (
            e.event_specific_data.materialization.metadata
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    for asset in ("churn_snapshot", "validated_churn_data", "holdout_set"):
        assert meta[asset]["spec_hash"].value == spec.short_hash
    assert meta["churn_snapshot"]["spec_path"].value.endswith("saas.yaml")
    assert meta["holdout_set"]["fraction"].value == 0.3
    assert meta["holdout_set"]["salt"].value == "saas-v1"


def test_bad_rows_of_the_specs_table_fail_its_checks_naming_the_target_value(saas_source) -> None:
    raw = saas_table(600)
    raw.loc[[3, 4, 5], "Churned?"] = "unknown"
    spec = saas_source(raw)
    result = _materialize(spec, ["churn_snapshot", "validated_churn_data"])
    assert not result.success
    assert materialized(result) == {"churn_snapshot"}
    target = checks(result)[("validated_churn_data", "left_in_set")]
    assert not target.passed
    assert "unknown" in target.metadata["observed"].value
    assert "A00003" in target.metadata["failure_cases"].value


def test_a_spec_feature_the_data_lacks_stops_the_snapshot_naming_column_and_key(
    saas_source,
) -> None:
    spec = saas_source(saas_table(300).drop(columns=["Monthly Spend"]))
    result = _materialize(spec, ["churn_snapshot", "validated_churn_data"])
    assert not result.success
    message = step_error(result)
    assert "'Monthly Spend'" in message and "features.spend.source" in message, message
    assert materialized(result) == set()


LOCATION_ERROR_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


def test_the_ui_shows_a_bad_specs_message_as_the_code_locations_error(tmp_path: Path) -> None:
    """A real dagster-webserver on a bad spec: the code location's load error (what the UI
    shows on the deployment page) begins with our message naming the key, not a wrapper."""
    import httpx

    from churn_platform.testing import dagster_webserver

    text, expected = BAD_SPECS["slice_unknown_value"]
    spec_file = _write_spec(tmp_path / "bad.yaml", text)
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "CHURN_SPEC": str(spec_file),
        "CHURN_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    with dagster_webserver(env, tmp_path / "webserver.log") as url:
        errors: list[str] = []
        deadline = time.monotonic() + 600
        while not errors:  # the location loads in the background: wait for its outcome
            assert time.monotonic() < deadline, "the code location never reported its state"
            answer = httpx.post(f"{url}/graphql", json={"query": LOCATION_ERROR_QUERY}, timeout=60)
            entries = answer.json()["data"]["workspaceOrError"]["locationEntries"]
            loaded = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]]
            assert all(e["__typename"] == "PythonError" for e in loaded), loaded
            errors = [e["message"] for e in loaded]
            if not errors:
                time.sleep(0.5)
    (message,) = errors
    first = message.splitlines()[0]
    assert first.startswith("churn_platform.definitions.InvalidSettingsError: CHURN_SPEC="), first
    assert expected in message, message
    assert "Error occurred during the loading" not in message
