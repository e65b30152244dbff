"""The partitioned data graph with ``CHURN_ENGINE=spark`` against the pandas engine: one week
of a folder source (a CSV named by the week's Sunday) through ``churn_snapshot`` ->
``validated_churn_data`` -> ``holdout_set`` -> ``challenger_model`` with each engine, on a
real local Spark session (``local[2]``) and a real MLflow SQLite store.

On a week with planted defects (a duplicate id, an out-of-range value, an unparseable value)
both engines report the same checks with the same outcomes and failing counts and block
alike. On a clean week they select the same holdout customers (``holdout_mask`` applied on
the executors), the Spark engine's values are Parquet datasets named by a record, and a
model trains on rows sampled on Spark to the training cap (never the whole week collected).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from churn_platform.core.engines import EngineConfig
from churn_platform.core.engines.spark_session import spark_session
from churn_platform.core.engines.spark_week import training_rows
from churn_platform.core.records import SparkDataset
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.io_manager import RECORDS, read_value, write_value
from churn_platform_tests.pipeline import (
    FAST_MODEL,
    THROUGH_MODEL,
    checks,
    materialize,
    resource,
    step_error,
)

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="no Java runtime for pyspark (default-jre-headless)"
)
WEEK = "2026-11-08"
ROWS = 4000
CAP = 1500
DATA = ["churn_snapshot", "validated_churn_data"]
SPARK = EngineConfig(
    engine="spark", spark_master="local[2]", spark_driver_memory="1g", shuffle_partitions=2
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session(SPARK)
    yield session
    session.stop()


@pytest.fixture
def folder(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of weekly files as the model's source, Spark's master ``local[2]``."""
    weeks = churn_home / "weeks"
    weeks.mkdir()
    monkeypatch.setenv("CHURN_SOURCE", "file")
    monkeypatch.setenv("CHURN_SOURCE_PATH", str(weeks))
    monkeypatch.setenv("CHURN_SPARK_MASTER", SPARK.spark_master)
    monkeypatch.delenv("CHURN_ENGINE", raising=False)
    return weeks


def write_week(folder: Path, frame: pd.DataFrame) -> None:
    """The week's rows as a CSV export gives them (every cell text), named by its Sunday."""
    out = frame.astype(str)
    out["signup_date"] = frame["signup_date"].dt.strftime("%Y-%m-%d")
    out.to_csv(folder / f"{WEEK}.csv", index=False)


def on_engine(
    engine: str, monkeypatch: pytest.MonkeyPatch, names: list[str], ops: dict[str, Any] | None
) -> dg.ExecuteInJobResult:
    """``names`` materialised for ``WEEK`` on a fresh instance with ``CHURN_ENGINE=engine``."""
    monkeypatch.setenv("CHURN_ENGINE", engine)
    return materialize(names, dg.DagsterInstance.ephemeral(), ops, week=WEEK)


def contract_checks(result: dg.ExecuteInJobResult) -> dict[str, tuple[bool, Any]]:
    """(asset/check) -> (passed, failing rows) of every check the run evaluated."""
    return {
        f"{asset}/{name}": (data.passed, _value(data.metadata.get("failing_rows")))
        for (asset, name), data in checks(result).items()
    }


def _value(entry: Any) -> Any:
    return None if entry is None else entry.value


def stored(asset: str) -> Any:
    """The value the IO manager holds for ``asset`` (its newest)."""
    parts = [asset, WEEK] if asset in DATA else [asset]
    return resource("io_manager").read_partition(parts, asset, None)


def failure(result: dg.ExecuteInJobResult) -> str:
    assert not result.success
    [text] = [
        e.event_specific_data.user_failure_data.description
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    return text


def test_planted_defects_give_the_same_checks_and_counts_on_both_engines(
    folder: Path, monkeypatch: pytest.MonkeyPatch, spark: Any
) -> None:
    rows = generate(SyntheticSpec(n_rows=ROWS, as_of=WEEK, seed=5))
    write_week(folder, rows)  # the CSV as text, then three cells planted in it
    text = pd.read_csv(folder / f"{WEEK}.csv", dtype=str, keep_default_na=False)
    text.loc[7, "customer_id"] = text.loc[90, "customer_id"]  # a duplicate id (2 rows)
    text.loc[20, "tenure_months"] = "-4"  # out of range
    text.loc[30, "monthly_spend"] = "forty"  # unparseable
    text.to_csv(folder / f"{WEEK}.csv", index=False)

    jobs = spark.sparkContext.statusTracker()
    before = len(jobs.getJobIdsForGroup(None))
    on_pandas = on_engine("pandas", monkeypatch, DATA, None)
    assert len(jobs.getJobIdsForGroup(None)) == before  # the pandas engine leaves Spark be
    on_spark = on_engine("spark", monkeypatch, DATA, None)
    assert len(jobs.getJobIdsForGroup(None)) > before  # the data steps ran as Spark jobs

    pandas_checks, spark_checks = contract_checks(on_pandas), contract_checks(on_spark)
    assert spark_checks == pandas_checks  # the same check names, outcomes and failing counts
    assert len(spark_checks) > 10
    assert spark_checks["validated_churn_data/customer_id_unique"] == (False, 2)
    assert spark_checks["validated_churn_data/tenure_months_in_range"] == (False, 1)
    assert spark_checks["validated_churn_data/values_parseable"][0] is False
    assert spark_checks["churn_snapshot/row_count_positive"] == (True, None)
    assert failure(on_spark) == failure(on_pandas)  # the same blocking rules and messages
    assert "blocking contract rule(s) failed" in failure(on_spark)
    snapshot = stored("churn_snapshot")
    assert isinstance(snapshot, SparkDataset) and snapshot.rows == ROWS
    assert (Path(snapshot.path) / "_SUCCESS").exists()  # a Parquet dataset in the storage


def test_a_clean_week_gives_the_same_holdout_and_trains_on_spark(
    folder: Path, monkeypatch: pytest.MonkeyPatch, spark: Any
) -> None:
    write_week(folder, generate(SyntheticSpec(n_rows=ROWS, as_of=WEEK, seed=6)))
    on_pandas = on_engine("pandas", monkeypatch, [*DATA, "holdout_set"], None)
    assert on_pandas.success, step_error(on_pandas)
    pandas_holdout = stored("holdout_set")
    assert isinstance(stored("validated_churn_data"), pd.DataFrame)

    model = {"challenger_model": {"config": {**FAST_MODEL, "max_training_rows": CAP}}}
    on_spark = on_engine("spark", monkeypatch, THROUGH_MODEL, model)
    assert on_spark.success, step_error(on_spark)
    validated = stored("validated_churn_data")
    assert isinstance(validated, SparkDataset) and validated.kind == "validated"
    assert validated.rows == ROWS
    spark_holdout = stored("holdout_set")

    pandas_checks, spark_checks = contract_checks(on_pandas), contract_checks(on_spark)
    shared = {k: v for k, v in spark_checks.items() if not k.startswith("challenger_model/")}
    assert shared == pandas_checks
    ids = "customer_id"
    assert 400 < len(spark_holdout) == len(pandas_holdout)
    assert sorted(spark_holdout[ids]) == sorted(pandas_holdout[ids])
    pd.testing.assert_frame_equal(  # the same rows with the same dtypes
        spark_holdout.sort_values(ids).reset_index(drop=True),
        pandas_holdout.sort_values(ids).reset_index(drop=True),
    )
    [trained] = [
        e.event_specific_data.materialization.metadata
        for e in on_spark.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key.to_user_string() == "challenger_model"
    ]
    assert trained["n_train_rows"].value == CAP
    # every labelled non-holdout row counted where it lies, though only a sample was collected
    assert trained["n_available_rows"].value == ROWS - len(spark_holdout)
    # what reaches the driver: a sample a little over the cap, never the whole week
    held = spark_holdout[ids]
    rows, available = training_rows(spark, [validated], default_spec(), held, CAP, seed=42)
    assert available == ROWS - len(spark_holdout)
    assert CAP <= len(rows) < available - 500
    assert not rows[ids].isin(held).any()


def test_a_week_lacking_a_spec_column_stops_at_the_snapshot_on_both_engines(
    folder: Path, monkeypatch: pytest.MonkeyPatch, spark: Any
) -> None:
    write_week(
        folder, generate(SyntheticSpec(n_rows=300, as_of=WEEK, seed=7)).drop(columns="region")
    )
    on_pandas = on_engine("pandas", monkeypatch, DATA, None)
    on_spark = on_engine("spark", monkeypatch, DATA, None)
    assert contract_checks(on_spark) == contract_checks(on_pandas)
    assert contract_checks(on_spark)["churn_snapshot/schema_columns_present"] == (False, None)
    assert failure(on_spark) == failure(on_pandas)  # names the column and the file
    assert "['region']" in failure(on_spark) and f"{WEEK}.csv" in failure(on_spark)
    assert not list((folder.parent / "spark").rglob("*.parquet"))  # nothing kept


def test_the_synthetic_worlds_week_handed_to_spark_gives_the_same_holdout(
    churn_home: Path, monkeypatch: pytest.MonkeyPatch, spark: Any
) -> None:
    """The default source: the week is drawn in pandas, moved into Spark, kept as Parquet."""
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", str(ROWS))
    monkeypatch.setenv("CHURN_SPARK_MASTER", SPARK.spark_master)
    names = [*DATA, "holdout_set"]
    on_pandas = on_engine("pandas", monkeypatch, names, None)
    assert on_pandas.success, step_error(on_pandas)
    pandas_holdout = stored("holdout_set")
    on_spark = on_engine("spark", monkeypatch, names, None)
    assert on_spark.success, step_error(on_spark)
    assert isinstance(stored("validated_churn_data"), SparkDataset)
    assert contract_checks(on_spark) == contract_checks(on_pandas)
    drawn = [
        on.asset_materializations_for_node("churn_snapshot")[0].metadata
        for on in (on_pandas, on_spark)
    ]
    for key in ("synthetic_week", "synthetic_as_of", "rows", "week"):
        assert drawn[1][key] == drawn[0][key], key
    assert drawn[1]["engine"].value == "spark"
    pd.testing.assert_frame_equal(
        stored("holdout_set").sort_values("customer_id").reset_index(drop=True),
        pandas_holdout.sort_values("customer_id").reset_index(drop=True),
    )


def test_the_dataset_record_is_stored_as_json_and_rebuilt(tmp_path: Path) -> None:
    """The IO manager stores a ``SparkDataset`` (a registered record) as JSON, never a pickle."""
    record = SparkDataset(
        "snapshot",
        str(tmp_path / "spark" / "snapshots" / "snapshot_2026-11-08.parquet"),
        WEEK,
        12,
        "ab" * 32,
        "0123abcd",
        {"columns": ["customer_id"], "dtypes": {"customer_id": "string"}, "lost": []},
    )
    assert SparkDataset in RECORDS.values()
    write_value(tmp_path / "churn_snapshot" / WEEK, record)
    assert read_value(tmp_path / "churn_snapshot" / WEEK) == record
    manifest = next((tmp_path / "churn_snapshot" / WEEK).glob("v-*/value.json")).read_text()
    assert "churn_platform.core.records:SparkDataset" in manifest
