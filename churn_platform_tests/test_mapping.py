"""Mapping a user's table onto the canonical schema: renames, value maps, typing, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn_platform.core import schema as s
from churn_platform.core.mapping import ColumnMapping, DataSourceError, apply_mapping
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate

TELCO_COLUMNS = {
    "CustomerID": s.CUSTOMER_ID,
    "Signup Date": s.SIGNUP_DATE,
    "Tenure": s.TENURE_MONTHS,
    "MonthlyCharges": s.MONTHLY_SPEND,
    "Contract": s.CONTRACT_TYPE,
    "Enterprise": s.IS_ENTERPRISE,
    "Region": s.REGION,
    "Tickets": s.SUPPORT_TICKETS,
    "LastLoginHour": s.LAST_LOGIN_HOUR,
    "Churn": s.TARGET,
}
TELCO_VALUES = {
    s.CONTRACT_TYPE: {"Month-to-month": "monthly", "One year": "annual", "Two year": "multi-year"},
    s.TARGET: {"Yes": 1, "No": 0},
    s.IS_ENTERPRISE: {"Yes": True, "No": False},
}
SPEC = default_spec()
TELCO = ColumnMapping(columns=TELCO_COLUMNS, values=TELCO_VALUES, spec=SPEC)


def telco_frame(n: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A canonical frame and the same rows as a user's text table (Telco-style labels)."""
    canonical = generate(SyntheticSpec(n_rows=n, seed=11))
    raw = canonical.copy()
    raw[s.CONTRACT_TYPE] = raw[s.CONTRACT_TYPE].map(
        {v: k for k, v in TELCO_VALUES[s.CONTRACT_TYPE].items()}
    )
    raw[s.TARGET] = raw[s.TARGET].map({1: "Yes", 0: "No"})
    raw[s.IS_ENTERPRISE] = raw[s.IS_ENTERPRISE].map({True: "Yes", False: "No"})
    raw[s.SIGNUP_DATE] = raw[s.SIGNUP_DATE].dt.strftime("%Y-%m-%d")
    raw = raw.astype(str).rename(columns={v: k for k, v in TELCO_COLUMNS.items()})
    return canonical, raw


def test_renames_maps_values_and_types_to_canonical_dtypes() -> None:
    canonical, raw = telco_frame()
    mapped = apply_mapping(raw, TELCO, spec=SPEC)
    assert list(mapped.frame.columns) == list(s.ALL_COLUMNS)
    assert {c: str(t) for c, t in mapped.frame.dtypes.items()} == s.CANONICAL_DTYPES
    expected = canonical.astype(s.CANONICAL_DTYPES)
    pd.testing.assert_frame_equal(mapped.frame, expected)
    assert mapped.renamed == TELCO_COLUMNS
    assert mapped.mapped_values[s.TARGET] == len(raw)
    assert all(r.unparseable == 0 and r.blanks == 0 for r in mapped.conversion_report.values())


def test_text_numbers_with_blanks_become_counted_nulls() -> None:
    raw = pd.DataFrame(
        {
            "id": ["A1", "A2", "A3", "A4", "A5", "A6"],
            "tenure": ["12", " ", "", "NA", "twelve", "2.5"],
            "spend": ["10.5", "", "1e2", " 7 ", "null", "12,50"],
        }
    )
    mapping = {
        "columns": {"id": "customer_id", "tenure": "tenure_months", "spend": "monthly_spend"}
    }
    mapped = apply_mapping(raw, mapping, required=(s.CUSTOMER_ID,), spec=SPEC)
    tenure = mapped.conversion_report[s.TENURE_MONTHS]
    spend = mapped.conversion_report[s.MONTHLY_SPEND]
    assert (tenure.blanks, tenure.unparseable) == (3, 2)  # "twelve" and 2.5 are not whole months
    assert (spend.blanks, spend.unparseable) == (2, 1)  # "12,50" needs a decimal point
    assert mapped.frame[s.TENURE_MONTHS].tolist()[0] == 12
    assert mapped.frame[s.TENURE_MONTHS].isna().sum() == 5
    assert mapped.frame[s.MONTHLY_SPEND].tolist()[:4] == [
        10.5,
        pytest.approx(np.nan, nan_ok=True),
        100.0,
        7.0,
    ]
    assert tenure.examples[s.CUSTOMER_ID].tolist() == ["A5", "A6"]
    assert tenure.examples["value"].tolist() == ["twelve", "2.5"]
    assert spend.examples[s.CUSTOMER_ID].tolist() == ["A6"]
    assert mapped.unparseable_total == 3
    assert mapped.summary()["conversion"][s.TENURE_MONTHS]["examples"] == ["twelve", "2.5"]


def test_missing_required_column_error_names_column_found_columns_and_fix() -> None:
    _, raw = telco_frame(20)
    columns = {k: v for k, v in TELCO_COLUMNS.items() if k != "Tenure"}
    with pytest.raises(DataSourceError) as info:
        apply_mapping(raw, {"columns": columns}, spec=SPEC)
    message = str(info.value)
    assert "'tenure_months'" in message
    assert "'Tenure'" in message  # the columns found are listed
    assert 'columns: {"Tenure": "tenure_months"}' in message  # the fix, with the close match


def test_mapping_key_absent_from_table_is_named() -> None:
    _, raw = telco_frame(20)
    columns = {("Tenur" if k == "Tenure" else k): v for k, v in TELCO_COLUMNS.items()}
    with pytest.raises(DataSourceError, match=r"\['Tenur'\].*did you mean 'Tenure'"):
        apply_mapping(raw, {"columns": columns}, spec=SPEC)


def test_extra_columns_dropped_by_default_and_kept_on_request() -> None:
    _, raw = telco_frame(20)
    raw["Notes"] = "x"
    dropped = apply_mapping(raw, TELCO, spec=SPEC)
    assert "Notes" not in dropped.frame.columns and dropped.dropped_columns == ["Notes"]
    kept = apply_mapping(
        raw,
        ColumnMapping(TELCO.columns, TELCO.values, keep_extra_columns=True, spec=SPEC),
        spec=SPEC,
    )
    assert list(kept.frame.columns) == [*s.ALL_COLUMNS, "Notes"]
    assert kept.frame["Notes"].eq("x").all() and kept.dropped_columns == []


def test_values_outside_the_map_are_left_and_reported() -> None:
    _, raw = telco_frame(30)
    raw.loc[[3, 7], "Contract"] = "Weekly"
    mapped = apply_mapping(raw, TELCO, spec=SPEC)
    assert mapped.frame.loc[[3, 7], s.CONTRACT_TYPE].tolist() == ["Weekly", "Weekly"]
    assert mapped.unmapped_values[s.CONTRACT_TYPE] == ["Weekly"]
    assert mapped.mapped_values[s.CONTRACT_TYPE] == 28


def test_float_ids_keep_their_integer_text_and_booleans_and_dates_parse() -> None:
    raw = pd.DataFrame(
        {
            s.CUSTOMER_ID: [101.0, np.nan, 103.0, 104.0],
            s.IS_ENTERPRISE: ["TRUE", "no", "", "perhaps"],
            s.SIGNUP_DATE: ["2024-01-05", "2024-02-30", "", "2023-12-31"],
        }
    )
    mapped = apply_mapping(raw, required=(), spec=SPEC)
    assert mapped.frame[s.CUSTOMER_ID].tolist()[0] == "101"
    assert mapped.frame[s.CUSTOMER_ID].isna().tolist() == [False, True, False, False]
    assert mapped.frame[s.IS_ENTERPRISE].tolist()[:2] == [True, False]
    assert mapped.frame[s.IS_ENTERPRISE].isna().tolist() == [False, False, True, True]
    enterprise = mapped.conversion_report[s.IS_ENTERPRISE]
    assert (enterprise.blanks, enterprise.unparseable) == (1, 1)
    dates = mapped.conversion_report[s.SIGNUP_DATE]
    assert (dates.blanks, dates.unparseable) == (1, 1)  # Feb 30th does not exist
    assert str(mapped.frame[s.SIGNUP_DATE].dtype) == "datetime64[ns]"


def test_value_maps_match_numbers_by_their_text() -> None:
    raw = pd.DataFrame({s.CUSTOMER_ID: ["a", "b", "c"], s.TARGET: [1, 0, 2]})
    mapped = apply_mapping(
        raw, {"values": {s.TARGET: {"1": "0", "0": "1"}}}, required=(), spec=SPEC
    )
    assert mapped.frame[s.TARGET].tolist() == [0, 1, 2]
    assert mapped.unmapped_values[s.TARGET] == ["2"]


@pytest.mark.parametrize(
    ("mapping", "pattern"),
    [
        ({"columns": {"x": "tenure"}}, r"unknown canonical column\(s\) \['tenure'\]"),
        ({"columns": {"a": "region", "b": "region"}}, r"several user columns.*'region'"),
        ({"values": {"Contract": {"x": "y"}}}, r"'values' names unknown.*\['Contract'\]"),
        ({"colums": {}}, r"unknown key\(s\) \['colums'\]"),
    ],
)
def test_invalid_mappings_say_what_is_wrong(mapping: dict, pattern: str) -> None:
    with pytest.raises(DataSourceError, match=pattern):
        ColumnMapping.from_dict(mapping, spec=SPEC)


def test_rename_onto_an_existing_canonical_column_is_refused() -> None:
    raw = pd.DataFrame({"region": ["north"], "Area": ["south"], s.CUSTOMER_ID: ["a"]})
    with pytest.raises(
        DataSourceError, match=r"'Area' -> 'region'.*already has a column named \['region'\]"
    ):
        apply_mapping(raw, {"columns": {"Area": "region"}}, required=(), spec=SPEC)


def test_from_json_round_trip() -> None:
    text = '{"columns": {"Churn": "churned"}, "values": {"churned": {"Yes": "1"}}}'
    mapping = ColumnMapping.from_json(text, spec=SPEC)
    assert mapping.to_dict() == {
        "columns": {"Churn": "churned"},
        "values": {"churned": {"Yes": "1"}},
        "keep_extra_columns": False,
    }
    assert ColumnMapping.from_json("", spec=SPEC) == ColumnMapping(spec=SPEC)
    with pytest.raises(DataSourceError, match="not valid JSON"):
        ColumnMapping.from_json("{columns:", spec=SPEC)


def test_generated_frame_maps_onto_itself_and_nulls_survive_typing() -> None:
    raw = generate(SyntheticSpec(n_rows=500, seed=3, null_rate={s.TENURE_MONTHS: 0.1}))
    mapped = apply_mapping(raw, spec=SPEC)
    assert mapped.frame[s.TENURE_MONTHS].isna().sum() == raw[s.TENURE_MONTHS].isna().sum() > 0
    report = mapped.conversion_report[s.TENURE_MONTHS]
    assert report.missing == raw[s.TENURE_MONTHS].isna().sum()
    assert report.blanks == report.unparseable == 0
    kept = raw[s.TENURE_MONTHS].notna()
    assert (
        mapped.frame.loc[kept, s.TENURE_MONTHS].astype(int).tolist()
        == raw.loc[kept, s.TENURE_MONTHS].astype(int).tolist()
    )
