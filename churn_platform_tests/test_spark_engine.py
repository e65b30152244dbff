"""The Spark engine against the pandas engine on the same tables: the contract (same rule
names, failing counts, pass/fail, evidence), the mapping (the same canonical frame), the
Spark data version (order-independent, value-sensitive) and batch scores (``spark_udf`` of
a registered version equal to pandas ``predict_proba`` within 1e-12).

One local Spark session (``local[2]``, 2 shuffle partitions) for the module; tables of a
few thousand rows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn_platform import settings
from churn_platform.core.contract import ContractConfig, RangeRule, RowRule
from churn_platform.core.engines import EngineConfig, EngineError
from churn_platform.core.engines.spark_contract import spark_check, spark_data_version
from churn_platform.core.engines.spark_mapping import map_on_spark, read_source
from churn_platform.core.engines.spark_session import spark_session
from churn_platform.core.engines.validation import Validation, validate
from churn_platform.core.mapping import ColumnMapping, apply_mapping
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.settings import SettingsError
from churn_platform.testing import RegisteredModels

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="no Java runtime for pyspark (default-jre-headless)"
)
SPEC = default_spec()
PANDAS = EngineConfig()
SPARK = EngineConfig(
    engine="spark", spark_master="local[2]", spark_driver_memory="1g", shuffle_partitions=2
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session(SPARK)
    yield session
    session.stop()


def table(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    return generate(SyntheticSpec(n_rows=n, seed=seed))


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as a CSV export gives it: every cell text."""
    out = frame.astype(str)
    out["signup_date"] = frame["signup_date"].dt.strftime("%Y-%m-%d")
    return out


def with_defects(frame: pd.DataFrame) -> pd.DataFrame:
    """Planted defects: nulls, out-of-range, unknown categories, duplicate and null ids,
    unparseable cells, an unmapped label."""
    out = as_text(frame)
    out.loc[0:199, "monthly_spend"] = ""  # 200 blanks: null rate 6.7% > 5%
    out.loc[200:202, "tenure_months"] = "-4"  # out of range (3 rows)
    out.loc[203, "last_login_hour"] = "31"  # out of range
    out.loc[204:208, "region"] = "mars"  # unknown category (5 rows)
    out.loc[209:210, "region"] = "pluto"  # unknown category (2 rows)
    out.loc[211:213, "customer_id"] = out.loc[300, "customer_id"]  # 4 rows share one id
    out.loc[214, "customer_id"] = ""  # a null id
    out.loc[215, "churned"] = "maybe"  # a label the spec does not map
    out.loc[216, "monthly_spend"] = "abc"  # unparseable number
    out.loc[217, "tenure_months"] = "2.5"  # a fraction in an integer column
    out.loc[218, "signup_date"] = "not a date"
    out.loc[219, "is_enterprise"] = "perhaps"
    out.loc[220, "support_tickets"] = "NA"  # null-like text: a blank, not an error
    return out


def both(source: Any, spark: Any, **kwargs: Any) -> tuple[Validation, Validation]:
    return (
        validate(source, SPEC, PANDAS, **kwargs),
        validate(source, SPEC, SPARK, spark=spark, **kwargs),
    )


def assert_same_results(a: Validation, b: Validation) -> None:
    assert [r.name for r in a.results] == [r.name for r in b.results]
    for x, y in zip(a.results, b.results, strict=True):
        assert (x.passed, x.severity, x.failing_rows, x.column) == (
            y.passed,
            y.severity,
            y.failing_rows,
            y.column,
        ), x.name
        assert x.message == y.message, x.name
        if x.name.endswith("_mean_in_range"):  # a float sum in another order
            assert y.observed == pytest.approx(x.observed, rel=1e-12), x.name
        else:
            assert y.observed == x.observed, x.name
        assert len(y.failure_cases) == len(x.failure_cases), x.name


def test_engines_agree_on_a_clean_table(spark: Any) -> None:
    a, b = both(table(), spark)
    assert a.rows == b.rows == 3000
    assert a.blocking == [] and b.blocking == []
    assert_same_results(a, b)


def test_engines_read_a_parquet_file_written_by_pandas_alike(spark: Any, tmp_path: Path) -> None:
    """pandas writes nanosecond timestamps, which Spark reads only as numbers: the engine
    turns them back into the same dates."""
    path = tmp_path / "snapshot.parquet"
    table(800).to_parquet(path)
    a, b = both(path, spark)
    assert_same_results(a, b)
    pd.testing.assert_frame_equal(
        canonical_sorted(b.frame.toPandas()), canonical_sorted(a.frame), check_dtype=True
    )


def test_engines_agree_on_planted_defects(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "defects.csv"
    with_defects(table()).to_csv(path, index=False)
    labels = {"values": {"churned": {"1": 1, "0": 0}}}  # "maybe" is a label it lacks
    config = ContractConfig(spec=SPEC, severities={"region_in_set": "WARN"}, failure_sample_size=3)
    a, b = both(path, spark, mapping=labels, contract=config)
    assert_same_results(a, b)
    assert "region_in_set" not in {r.name for r in b.blocking}
    assert max(len(r.failure_cases) for r in b.results) == 3
    failed = {r.name: r.failing_rows for r in b.results if not r.passed}
    assert failed == {
        "values_parseable": 5,
        "customer_id_not_null": 1,
        "customer_id_unique": 4,
        "tenure_months_in_range": 3,
        "last_login_hour_in_range": 1,
        "region_in_set": 7,
        "churned_in_set": 1,
        "monthly_spend_null_rate": 201,
        "churned_null_rate": 1,
    }
    by_name = {r.name: r for r in b.results}
    assert by_name["region_in_set"].observed == {"mars": 5, "pluto": 2}
    assert by_name["customer_id_unique"].observed == 1
    assert by_name["churned_in_set"].observed == {"maybe": 1}
    for result in (a, b):  # the label as read, though typing lost it
        lost = {r.name: r for r in result.results}["churned_in_set"].failure_cases
        assert list(lost["churned"]) == ["maybe"]
    unique = by_name["customer_id_unique"].failure_cases
    assert set(unique["customer_id"]) == {with_defects(table()).loc[300, "customer_id"]}
    conversion = b.summary["conversion"]
    assert conversion["support_tickets"]["blanks"] == 1
    assert conversion["monthly_spend"]["examples"] == ["abc"]
    for col, report in a.summary["conversion"].items():
        mine = {k: v for k, v in conversion[col].items() if k != "source_dtype"}
        assert mine == {k: v for k, v in report.items() if k != "source_dtype"}, col
    assert a.summary["unmapped_values"] == b.summary["unmapped_values"]


def canonical_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(SPEC.dtypes)
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True)


def test_mapping_gives_the_same_canonical_frame(spark: Any) -> None:
    raw = with_defects(table(1500)).rename(columns={"customer_id": "Customer ID"})
    raw["contract_type"] = raw["contract_type"].replace({"monthly": "M"})
    raw["note"] = "extra"
    mapping = ColumnMapping(
        columns={"Customer ID": "customer_id"},
        values={"contract_type": {"M": "monthly"}},
        spec=SPEC,
    )
    pandas_frame = apply_mapping(raw, mapping, spec=SPEC)
    mapped = map_on_spark(read_source(spark, raw), mapping, spec=SPEC)
    assert mapped.renamed == pandas_frame.renamed == {"Customer ID": "customer_id"}
    assert mapped.dropped == pandas_frame.dropped_columns == ["note"]
    spark_frame = mapped.frame.toPandas()
    assert list(spark_frame.columns) == list(pandas_frame.frame.columns)
    expected = canonical_sorted(pandas_frame.frame.dropna(subset=["customer_id"]))
    got = canonical_sorted(spark_frame.dropna(subset=["customer_id"]))
    pd.testing.assert_frame_equal(got, expected)
    assert (got["contract_type"] == "M").sum() == 0


def test_the_mapping_refuses_a_bad_key_as_the_pandas_engine_does(spark: Any) -> None:
    raw = as_text(table(50))
    bad = {"columns": {"cust_id": "customer_id"}}
    with pytest.raises(ValueError) as pandas_error:
        apply_mapping(raw, bad, spec=SPEC)
    with pytest.raises(ValueError) as spark_error:
        map_on_spark(read_source(spark, raw), bad, spec=SPEC)
    assert str(spark_error.value) == str(pandas_error.value)
    assert "cust_id" in str(spark_error.value)


def test_the_spark_data_version_ignores_row_order_and_sees_one_value(spark: Any) -> None:
    frame = as_text(table(2000))
    mapped = map_on_spark(read_source(spark, frame), spec=SPEC)
    version = spark_data_version(mapped.frame)
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = map_on_spark(read_source(spark, shuffled).repartition(3), spec=SPEC)
    assert spark_data_version(again.frame) == version
    changed = frame.copy()
    changed.loc[17, "monthly_spend"] = "17.5"
    other = map_on_spark(read_source(spark, changed), spec=SPEC)
    assert spark_data_version(other.frame) != version
    moved = frame.copy()  # a null moved to another column of the same row
    moved.loc[5, "support_tickets"], moved.loc[5, "tenure_months"] = (
        "",
        frame.loc[5, "tenure_months"],
    )
    assert spark_data_version(map_on_spark(read_source(spark, moved), spec=SPEC).frame) != version
    assert validate(frame, SPEC, SPARK, spark=spark).version == version


def test_an_unknown_engine_is_refused_naming_the_setting() -> None:
    with pytest.raises(EngineError, match="CHURN_ENGINE='dask'.*pandas, spark"):
        EngineConfig(engine="dask")
    with pytest.raises(SettingsError, match="CHURN_ENGINE"):
        settings.engine_config({"CHURN_ENGINE": "dask"})
    config = settings.engine_config({"CHURN_ENGINE": "spark", "CHURN_SPARK_MASTER": "local[1]"})
    assert (config.engine, config.spark_master) == ("spark", "local[1]")
    assert settings.engine_config({}).engine == "pandas"


@dataclass(frozen=True)
class EvenRule(RowRule):
    """A rule kind the Spark engine has no form for."""


def test_a_rule_kind_without_a_spark_form_is_named(spark: Any) -> None:
    mapped = map_on_spark(read_source(spark, as_text(table(20))), spec=SPEC)
    rule = EvenRule("tenure_months_even", "ERROR", "tenure is even", "tenure_months")
    with pytest.raises(EngineError, match="'tenure_months_even' \\(EvenRule\\) has no Spark form"):
        spark_check(rule, mapped, list(mapped.frame.columns))
    known = RangeRule("r", "ERROR", "r", "tenure_months", low=0, high=1)
    spark_check(known, mapped, list(mapped.frame.columns))


def test_scores_are_the_same_on_both_engines(
    spark: Any, registered_models: RegisteredModels
) -> None:
    from churn_platform.resources.spark_scoring import score_on_pandas, score_on_spark

    rows = registered_models.rows
    a, b = both(rows, spark)
    uri, tracking = registered_models.model_uris["1"], registered_models.tracking_uri
    on_pandas = score_on_pandas(a.frame, uri, SPEC, tracking)
    on_spark = score_on_spark(spark, b.frame, uri, SPEC, tracking).toPandas()
    merged = on_pandas.merge(on_spark, on="customer_id", suffixes=("_pandas", "_spark"))
    assert len(merged) == len(rows) == len(on_spark)
    expected = registered_models.pipelines["1"].predict_proba(a.frame[list(SPEC.feature_names)])[
        :, 1
    ]
    np.testing.assert_allclose(on_pandas["probability"], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        merged["probability_spark"], merged["probability_pandas"], rtol=0, atol=1e-12
    )
