"""``churn_scores`` with ``CHURN_ENGINE=spark`` against the pandas engine: one week of a folder
source (a CSV named by the week's Sunday) materialised through Dagster with each engine, on a
real local Spark session and a real MLflow SQLite store with a registered champion.

The two tables must hold the same customers with the same probabilities (within 1e-9), ranks
and deciles, the same check outcomes and the same contract results; a week with planted
contract defects (in a file, or drawn by the synthetic world and handed to Spark) must fail on
both engines with the same rules and failing counts, and only the Spark run starts Spark jobs.
Only the data version differs, by design (the Spark engine hashes the rows as a multiset).

One ``local[1]`` session for the module (Spark start-up dominates); a few hundred rows."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_platform.config import PlatformConfig, load_config
from churn_platform.core.engines import EngineConfig
from churn_platform.core.engines.spark_session import spark_session
from churn_platform.core.engines.validation import validate
from churn_platform.core.scores import ScoresSettings
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.defs import weekly_scores
from churn_platform.resources.data_source import FileSourceResource, SyntheticSourceResource
from churn_platform_tests.pipeline import release_champion, resource, step_error

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="no Java runtime for pyspark (default-jre-headless)"
)
WEEK = "2026-11-15"
ROWS = 400
SAMPLE = ScoresSettings().serving_sample  # 200
SPEC = default_spec()
SPARK = EngineConfig(
    engine="spark", spark_master="local[1]", spark_driver_memory="1g", shuffle_partitions=1
)
# what may differ between the engines' tables: the data version (how it is hashed) and the run
PER_RUN = ["data_version", "run_id", "scored_at"]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session(SPARK)
    yield session
    session.stop()


@pytest.fixture
def home(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("CHURN_SCORES_URL", "CHURN_SCORES_START", "CHURN_ENGINE"):
        monkeypatch.delenv(var, raising=False)
    return churn_home


def write_week(folder: Path, frame: pd.DataFrame) -> Path:
    """The week's rows as a CSV export gives them (every cell text), named by its Sunday."""
    folder.mkdir(exist_ok=True)
    out = frame.astype(str)
    out["signup_date"] = frame["signup_date"].dt.strftime("%Y-%m-%d")
    path = folder / f"{WEEK}.csv"
    out.to_csv(path, index=False)
    return path


def materialise(config: PlatformConfig, source: Path | Any) -> dg.ExecuteInProcessResult:
    """``churn_scores`` of ``WEEK`` from a folder of weekly files (or a source resource)."""
    return dg.materialize(
        [weekly_scores.build_asset(config.model(), config)],
        partition_key=WEEK,
        resources={
            **{k: resource(k) for k in ("storage", "mlflow_registry", "scores_table")},
            "data_source": FileSourceResource(path=str(source))
            if isinstance(source, Path)
            else source,
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def on_engine(engine: EngineConfig) -> PlatformConfig:
    return dataclasses.replace(load_config(), engine=engine)


def outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    [text] = [
        e.event_specific_data.user_failure_data.description
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    return text


def failures_on_both(source: Path | Any, spark: Any) -> dict[str, str]:
    """The week's failure text on each engine; only the Spark run starts Spark jobs."""
    tracker = spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup(None))
    texts = {"pandas": failure(materialise(on_engine(EngineConfig()), source))}
    assert len(tracker.getJobIdsForGroup(None)) == before  # the pandas engine leaves Spark be
    texts["spark"] = failure(materialise(on_engine(SPARK), source))
    assert len(tracker.getJobIdsForGroup(None)) > before  # the contract ran as Spark jobs
    return texts


def driver_fetches(spark: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of every answer ``collect`` and ``toPandas`` bring to the driver from now on
    (the real methods, counted): the Spark path must fetch only small answers."""
    sizes: list[int] = []
    frame_class = type(spark.range(1))
    for name in ("collect", "toPandas"):
        real = getattr(frame_class, name)

        def counted(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            out = _real(self, *args, **kwargs)
            sizes.append(len(out))
            return out

        monkeypatch.setattr(frame_class, name, counted)
    return sizes


def test_both_engines_write_the_same_weekly_scores(home: Path, spark: Any) -> None:
    version = release_champion(seed=3)
    folder = home / "weeks"
    path = write_week(folder, generate(SyntheticSpec(n_rows=ROWS, as_of=WEEK, seed=2)))
    written = home / "scores" / f"week={WEEK}.parquet"

    on_pandas = materialise(on_engine(EngineConfig()), folder)
    assert on_pandas.success, step_error(on_pandas)
    pandas_table = pd.read_parquet(written)
    written.unlink()
    with pytest.MonkeyPatch.context() as patch:
        fetched = driver_fetches(spark, patch)
        on_spark = materialise(on_engine(SPARK), folder)
    assert on_spark.success, step_error(on_spark)
    spark_table = pd.read_parquet(written)
    # the week's rows never come to the driver: only counts, the first ids, deciles, the
    # histogram and the serving-parity sample (200 of the 400 rows)
    assert fetched and max(fetched) <= SAMPLE < ROWS, sorted(fetched)
    assert not list((home / ".staging").iterdir())  # the staged table is removed

    assert len(spark_table) == len(pandas_table) == ROWS
    assert set(spark_table["model_version"]) == {version}
    pd.testing.assert_frame_equal(
        spark_table.drop(columns=PER_RUN + ["probability"]),
        pandas_table.drop(columns=PER_RUN + ["probability"]),
    )  # the same ids in the same rank order, deciles, week, version, spec hash
    np.testing.assert_allclose(
        spark_table["probability"], pandas_table["probability"], rtol=0, atol=1e-9
    )
    assert outcomes(on_spark) == outcomes(on_pandas)
    assert all(outcomes(on_spark).values()), outcomes(on_spark)
    meta = {
        name: on.asset_materializations_for_node("churn_scores")[0].metadata
        for name, on in (("pandas", on_pandas), ("spark", on_spark))
    }
    for key in ("rows", "rules_passed", "warnings", "model_version", "spec_hash"):
        assert meta["spark"][key] == meta["pandas"][key], key
    assert (meta["pandas"]["engine"].value, meta["spark"]["engine"].value) == ("pandas", "spark")
    # the data version is the Spark engine's (the row multiset read by Spark from the file)
    spark_version = validate(str(path), SPEC, SPARK, spark=spark).version
    assert set(spark_table["data_version"]) == {spark_version}
    assert set(pandas_table["data_version"]) != {spark_version}


def test_a_planted_contract_defect_fails_both_engines_with_the_same_rules_and_counts(
    home: Path, spark: Any
) -> None:
    folder = home / "weeks"
    rows = generate(SyntheticSpec(n_rows=ROWS, as_of=WEEK, seed=2))
    rows.loc[10:12, "customer_id"] = rows.loc[50, "customer_id"]  # 4 rows share one id
    rows.loc[20:21, "tenure_months"] = -4  # out of range (2 rows)
    path = str(write_week(folder, rows))

    texts = failures_on_both(folder, spark)
    assert texts["spark"] == texts["pandas"]  # the same rules, messages and failing counts
    assert "2 blocking contract rule(s) failed" in texts["spark"], texts["spark"]
    assert "customer_id_unique" in texts["spark"] and "tenure_months_in_range" in texts["spark"]
    assert "not scored" in texts["spark"]
    pandas_rules = {r.name: r.failing_rows for r in validate(path, SPEC, EngineConfig()).results}
    spark_rules = {r.name: r.failing_rows for r in validate(path, SPEC, SPARK, spark=spark).results}
    assert spark_rules == pandas_rules
    assert (spark_rules["customer_id_unique"], spark_rules["tenure_months_in_range"]) == (4, 2)
    assert not (home / "scores" / f"week={WEEK}.parquet").exists()


def test_a_synthetic_week_handed_to_spark_fails_alike(home: Path, spark: Any) -> None:
    """The synthetic world's week is drawn in pandas and handed to Spark (no file to read)."""
    source = SyntheticSourceResource(n_rows=ROWS, duplicate_ids=5)
    texts = failures_on_both(source, spark)
    assert texts["spark"] == texts["pandas"]
    # 5 ids drawn twice: 10 rows share an id
    assert "customer_id_unique (FAILED: 10 row(s)" in texts["spark"], texts["spark"]


def test_the_spark_checks_give_the_pandas_checks_outcomes_on_planted_defects(spark: Any) -> None:
    """The same table, defects planted (25 customers not scored, one id of no customer, 12
    ids twice, 11 probabilities out of range or not a number), judged on both engines: the
    same outcomes, texts and evidence; and the same PSI over the previous week's bins."""
    from churn_platform.core import scores as sc
    from churn_platform.core import scores_spark

    rng = np.random.default_rng(4)
    identity = sc.ScoreIdentity(WEEK, "3", "d" * 64, "abc", "run-1", "2026-11-16T00:00:00")
    customers = [f"C{i:05d}" for i in range(300)]
    scored_ids = customers[25:] + ["ghost"] + customers[100:112]
    probabilities = rng.uniform(0, 1, len(scored_ids))
    probabilities[[3, 40, 77, 120, 150, 151, 152, 153, 154, 155, 200]] = [
        1.5, -0.2, np.nan, np.inf, 2, 3, 4, 5, 6, 7, -np.inf
    ]  # fmt: skip
    table = sc.score_table(scored_ids, probabilities, identity)
    on_spark = spark.createDataFrame(table)
    validated = spark.createDataFrame(pd.DataFrame({SPEC.id_column: customers}))
    previous = rng.beta(2, 5, 500)
    pairs = [
        (sc.rows_check(table, pd.Series(customers)), scores_spark.rows_check(on_spark, validated, SPEC.id_column)),
        (sc.unique_check(table), scores_spark.unique_check(on_spark)),
        (sc.range_check(table), scores_spark.range_check(on_spark)),
    ]  # fmt: skip
    for on_pandas, spark_outcome in pairs:
        assert not on_pandas.passed
        assert spark_outcome == on_pandas
    assert "25 customer(s) not scored" in pairs[0][0].description
    healthy = sc.score_table(customers, rng.beta(2, 4, 300), identity)
    psi = scores_spark.psi_check(spark.createDataFrame(healthy), previous, "w", 0.2)
    assert psi == sc.psi_check(healthy["probability"].to_numpy(), previous, "w", 0.2)
    mean, deciles, top = scores_spark.summary(spark.createDataFrame(healthy))
    pd.testing.assert_frame_equal(deciles, sc.deciles(healthy))
    pd.testing.assert_frame_equal(top, healthy.head(scores_spark.DRIVER_FETCH_LIMIT))
    assert mean == pytest.approx(healthy["probability"].mean(), abs=1e-12)
