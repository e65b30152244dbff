"""The data layer through Dagster: blocking contract checks, bring-your-own CSV with a mapping."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from churn_platform.core import schema as s
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.io_manager import read_value
from churn_platform_tests.pipeline import (
    FAST_MODEL,
    THROUGH_MODEL,
    checks,
    materialize,
    materialized,
    registry,
    step_error,
)


def validated_version(instance: dg.DagsterInstance) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey("validated_churn_data"))
    return event.asset_materialization.metadata["data_version"].value


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def file_source(churn_home: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the platform at a CSV file the test writes."""

    def use(frame: pd.DataFrame, name: str = "customers.csv") -> Path:
        path = write_csv(frame, churn_home / name)
        monkeypatch.setenv("CHURN_SOURCE", "file")
        monkeypatch.setenv("CHURN_SOURCE_PATH", str(path))
        return path

    return use


def test_defective_csv_fails_blocking_checks_with_evidence_and_trains_nothing(file_source):
    frame = generate(
        SyntheticSpec(
            n_rows=6000,
            seed=3,
            duplicate_ids=4,
            out_of_range={s.TENURE_MONTHS: 3, s.LAST_LOGIN_HOUR: 2},
        )
    )
    frame.loc[[10, 11], s.CONTRACT_TYPE] = "weekly"
    file_source(frame)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(THROUGH_MODEL, instance, {"challenger_model": {"config": FAST_MODEL}})

    assert not result.success
    assert "blocking contract rule(s) failed" in step_error(result)
    assert materialized(result) == {"churn_snapshot"}  # no validated data, no model
    found = checks(result)
    failed = {
        name
        for (asset, name), c in found.items()
        if asset == "validated_churn_data" and not c.passed
    }
    assert failed == {
        "customer_id_unique",
        "tenure_months_in_range",
        "last_login_hour_in_range",
        "contract_type_in_set",
    }
    tenure = found[("validated_churn_data", "tenure_months_in_range")].metadata
    assert tenure["failing_rows"].value == 3
    bad_ids = frame.loc[frame[s.TENURE_MONTHS] < 0, s.CUSTOMER_ID]
    assert all(i in tenure["failure_cases"].value for i in bad_ids)
    unknown = found[("validated_churn_data", "contract_type_in_set")].metadata
    assert "weekly" in unknown["observed"].value
    assert registry().aliases() == {}  # nothing registered


def test_last_good_validated_data_survives_a_bad_snapshot(file_source, churn_home):
    instance = dg.DagsterInstance.ephemeral()
    good = generate(SyntheticSpec(n_rows=3000, seed=4))
    file_source(good)
    first = materialize(["churn_snapshot", "validated_churn_data"], instance)
    assert first.success
    good_version = validated_version(instance)

    bad = good.copy()
    bad[s.CUSTOMER_ID] = None  # a column all null
    file_source(bad)
    second = materialize(["churn_snapshot", "validated_churn_data"], instance)
    assert not second.success
    failed = {
        n for (a, n), c in checks(second).items() if a == "validated_churn_data" and not c.passed
    }
    assert failed == {"customer_id_not_null"}

    assert validated_version(instance) == good_version
    # a file holds what it holds now: both runs took the current week, whose value stays
    week = first.dagster_run.tags["dagster/partition"]
    assert second.dagster_run.tags["dagster/partition"] == week
    stored = read_value(churn_home / "storage" / "validated_churn_data" / week)
    assert len(stored) == len(good) and stored[s.CUSTOMER_ID].notna().all()


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("missing_column", "monthly_spend"),
        ("empty_file", "has no data rows"),
        ("unreadable", "customers.parquet"),
    ],
)
def test_bad_files_stop_at_the_snapshot_with_a_message_naming_the_fix(
    file_source, churn_home, problem, expected
):
    frame = generate(SyntheticSpec(n_rows=500, seed=2))
    if problem == "missing_column":
        file_source(frame.drop(columns=[s.MONTHLY_SPEND]))
    elif problem == "empty_file":
        file_source(frame.head(0))
    else:
        path = file_source(frame)
        broken = path.with_name("customers.parquet")
        broken.write_bytes(b"PAR1 this is not parquet")
        import os

        os.environ["CHURN_SOURCE_PATH"] = str(broken)
    result = materialize(["churn_snapshot", "validated_churn_data"], dg.DagsterInstance.ephemeral())
    assert not result.success
    message = step_error(result)
    assert expected in message, message
    assert "validated_churn_data" not in materialized(result)


def test_user_csv_with_other_names_and_spellings_goes_through_to_a_registered_model(
    churn_home, monkeypatch: pytest.MonkeyPatch
):
    frame = generate(SyntheticSpec(n_rows=20_000, seed=8))
    user = pd.DataFrame(
        {
            "CustomerID": frame[s.CUSTOMER_ID],
            "SignupDate": frame[s.SIGNUP_DATE].dt.strftime("%Y-%m-%d"),
            "Tenure": frame[s.TENURE_MONTHS].astype(str),
            "MonthlyCharges": frame[s.MONTHLY_SPEND].map(lambda v: f"{v:.2f}"),
            "Contract": frame[s.CONTRACT_TYPE].map(
                {"monthly": "Month-to-month", "annual": "One year", "multi-year": "Two year"}
            ),
            "Enterprise": frame[s.IS_ENTERPRISE].map({True: "Yes", False: "No"}),
            "Region": frame[s.REGION].str.upper(),
            "Tickets": frame[s.SUPPORT_TICKETS],
            "LastLoginHour": frame[s.LAST_LOGIN_HOUR],
            "Churn": frame[s.TARGET].map({1: "Yes", 0: "No"}),
            "Notes": "kept out",
        }
    )
    user.loc[[5, 17, 40], "MonthlyCharges"] = " "  # blanks in a numeric column stored as text
    path = churn_home / "telco.csv"
    user.to_csv(path, index=False)
    mapping = {
        "columns": {
            "CustomerID": s.CUSTOMER_ID,
            "SignupDate": s.SIGNUP_DATE,
            "Tenure": s.TENURE_MONTHS,
            "MonthlyCharges": s.MONTHLY_SPEND,
            "Contract": s.CONTRACT_TYPE,
            "Enterprise": s.IS_ENTERPRISE,
            "Region": s.REGION,
            "Tickets": s.SUPPORT_TICKETS,
            "LastLoginHour": s.LAST_LOGIN_HOUR,
            "Churn": s.TARGET,
        },
        "values": {
            s.CONTRACT_TYPE: {
                "Month-to-month": "monthly",
                "One year": "annual",
                "Two year": "multi-year",
            },
            s.TARGET: {"Yes": "1", "No": "0"},
            s.IS_ENTERPRISE: {"Yes": "true", "No": "false"},
            s.REGION: {"NORTH": "north", "SOUTH": "south", "EAST": "east", "WEST": "west"},
        },
    }
    mapping_file = churn_home / "mapping.yaml"
    mapping_file.write_text(yaml.safe_dump(mapping))
    monkeypatch.setenv("CHURN_SOURCE", "file")
    monkeypatch.setenv("CHURN_SOURCE_PATH", str(path))
    monkeypatch.setenv("CHURN_MAPPING_FILE", str(mapping_file))

    instance = dg.DagsterInstance.ephemeral()
    result = materialize(THROUGH_MODEL, instance, {"challenger_model": {"config": FAST_MODEL}})
    assert result.success, step_error(result)
    snapshot_meta = instance.get_latest_materialization_event(
        dg.AssetKey("churn_snapshot")
    ).asset_materialization
    assert snapshot_meta.metadata["nulls_from_conversion"].value[s.MONTHLY_SPEND]["blanks"] == 3
    reg = registry()
    assert reg.alias_version("challenger") == "1"
    tags = reg.version_info("1").tags
    assert tags["data_version"] == snapshot_meta.metadata["data_version"].value
    assert tags["model_checks"] == "passed"
