"""The weekly scores' core: the table, its checks on planted defects, the week's contract,
the week's rows from each source kind, and the weeks a backfill covers."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from churn_platform.backfill import weeks_between
from churn_platform.core import scores as sc
from churn_platform.core import scores_step as step
from churn_platform.core.mapping import DataSourceError, apply_mapping
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.data_source import (
    FileSourceResource,
    SqlSourceResource,
    SyntheticSourceResource,
)
from churn_platform.resources.week_source import week_source

WEEK = "2026-11-15"
IDENTITY = sc.ScoreIdentity(WEEK, "3", "d" * 64, "abc123abc123", "run-1", "2026-11-16T00:00:00")


def table(n: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"C{i:05d}" for i in range(n)]
    return sc.score_table(ids, rng.uniform(0, 1, n), IDENTITY)


def test_the_table_ranks_best_first_with_deciles_and_the_identity_on_every_row():
    scores = sc.score_table(["a", "b", "c", "d"], np.array([0.2, 0.9, 0.2, 0.5]), IDENTITY)
    assert list(scores.columns) == list(sc.SCORE_COLUMNS)
    assert list(scores["entity_id"]) == ["b", "d", "a", "c"]  # ties broken by entity id
    assert list(scores["rank"]) == [1, 2, 3, 4]
    assert list(scores["decile"]) == [3, 5, 8, 10]
    big = table(1000)
    assert big.groupby("decile").size().tolist() == [100] * 10
    assert (big.loc[big["decile"] == 1, "probability"].min()) >= big["probability"].quantile(0.89)
    for name in ("week", "model_version", "data_version", "spec_hash", "run_id"):
        assert set(big[name]) == {getattr(IDENTITY, name)}


def test_the_checks_pass_on_a_healthy_table():
    scores = table()
    ids = pd.Series(scores["entity_id"].sample(frac=1, random_state=1).to_numpy())
    assert sc.rows_check(scores, ids).passed
    assert sc.unique_check(scores).passed
    assert sc.range_check(scores).passed


def test_a_missing_customer_fails_the_row_check_naming_it():
    scores = table()
    validated = scores["entity_id"].copy()
    dropped = scores.drop(index=7)
    outcome = sc.rows_check(dropped, validated)
    assert not outcome.passed
    assert scores.loc[7, "entity_id"] in outcome.description
    assert outcome.metadata["missing"] == 1
    # a score for nobody fails too
    extra = pd.concat([scores, scores.head(1).assign(entity_id="ghost")], ignore_index=True)
    assert not sc.rows_check(extra, validated).passed


def test_a_duplicate_id_fails_the_unique_check_and_the_row_count():
    scores = table()
    doubled = pd.concat([scores, scores.iloc[[3]]], ignore_index=True)
    outcome = sc.unique_check(doubled)
    assert not outcome.passed and scores.loc[3, "entity_id"] in outcome.description
    assert not sc.rows_check(doubled, scores["entity_id"]).passed


@pytest.mark.parametrize("bad", [1.2, -0.01, float("nan"), float("inf")])
def test_a_probability_out_of_range_fails_the_range_check(bad):
    scores = table()
    scores.loc[5, "probability"] = bad
    outcome = sc.range_check(scores)
    assert not outcome.passed
    assert outcome.metadata["out_of_range"] == 1
    assert scores.loc[5, "entity_id"] in outcome.description


def test_parity_fails_when_the_served_numbers_differ():
    batch = np.array([0.1, 0.5, 0.9])
    assert sc.parity_check(["a", "b", "c"], batch, batch + 1e-9, 1e-6).passed
    outcome = sc.parity_check(["a", "b", "c"], batch, batch + [0, 0.01, 0], 1e-6)
    assert not outcome.passed and "b: 0.500000 vs 0.510000" in outcome.description


def test_the_psi_check_warns_on_a_moved_distribution_and_passes_without_a_previous_week():
    rng = np.random.default_rng(0)
    last = rng.beta(2, 5, 4000)
    assert sc.psi_check(rng.beta(2, 5, 4000), last, "2026-11-08", 0.2).passed
    moved = sc.psi_check(rng.beta(5, 2, 4000), last, "2026-11-08", 0.2)
    assert not moved.passed and moved.metadata["psi"] > 0.2
    assert sc.psi_check(last, None, "2026-11-08", 0.2).passed


def test_weeks_start_on_sunday():
    assert sc.week_start_of("2026-11-15") == "2026-11-15"  # a Sunday
    assert sc.week_start_of("2026-11-21") == "2026-11-15"  # the Saturday after
    assert sc.week_start_of("2026-11-22") == "2026-11-22"
    assert sc.previous_week(WEEK) == "2026-11-08"


class PlantedScorer:
    """A scorer whose batch numbers carry a planted defect on one row."""

    version = "7"
    spec = default_spec()

    def __init__(self, defect: float | None = None):
        self.defect = defect

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        out = self.score_as_served(frame)
        if self.defect is not None:
            out[0] = self.defect
        return out

    def score_as_served(self, frame: pd.DataFrame) -> np.ndarray:
        return 0.05 + 0.9 * frame["last_login_hour"].to_numpy(dtype=float) / 23


def validated(rows: int = 300, **knobs) -> step.ValidatedWeek:
    spec = default_spec()
    mapped = apply_mapping(generate(SyntheticSpec(n_rows=rows, **knobs)), None, spec=spec)
    return step.validate_week(mapped, spec, WEEK, "test rows")


def test_score_week_refuses_to_publish_a_planted_out_of_range_probability():
    settings = sc.ScoresSettings(serving_sample=300)
    week = validated()
    healthy = step.score_week(week, PlantedScorer(), ("run", "now"), None, settings)
    assert healthy.failed == [] and len(healthy.table) == 300
    assert healthy.table["data_version"].iloc[0] == week.version
    broken = step.score_week(week, PlantedScorer(1.5), ("run", "now"), None, settings)
    assert [c.name for c in broken.failed] == [sc.RANGE, sc.PARITY]
    assert "probabilities_in_range" in step.failure_text(WEEK, broken.failed)


def test_a_week_breaking_the_contract_is_not_scored_and_the_rule_is_named():
    with pytest.raises(step.ScoresError, match="customer_id_unique") as caught:
        validated(duplicate_ids=5)
    assert "not scored" in str(caught.value)
    spec = default_spec()
    frame = generate(SyntheticSpec(n_rows=100)).drop(columns=["monthly_spend"])
    mapped = apply_mapping(frame, None, spec=spec, required=())
    with pytest.raises(step.ScoresError, match="monthly_spend"):
        step.validate_week(mapped, spec, WEEK, "test rows")


def test_the_synthetic_source_draws_the_partitions_week_whatever_as_of_pins():
    pinned = SyntheticSourceResource(n_rows=200, as_of="2026-11-01")
    rows = week_source(pinned, WEEK).load().frame
    expected = generate(SyntheticSpec(n_rows=200, as_of=WEEK))
    pd.testing.assert_frame_equal(rows, expected)
    other = week_source(pinned, "2026-11-22").load().frame
    assert (other["monthly_spend"] != rows["monthly_spend"]).mean() > 0.8


def test_a_folder_source_reads_the_file_named_by_the_weeks_sunday(tmp_path: Path):
    generate(SyntheticSpec(n_rows=50, as_of=WEEK)).to_parquet(tmp_path / f"{WEEK}.parquet")
    generate(SyntheticSpec(n_rows=70, as_of="2026-11-22")).to_csv(
        tmp_path / "2026-11-22.csv", index=False
    )
    folder = FileSourceResource(path=str(tmp_path))
    assert len(week_source(folder, WEEK).load().frame) == 50
    assert len(week_source(folder, "2026-11-22").load().frame) == 70
    with pytest.raises(DataSourceError, match=r"2026-11-29\.csv or 2026-11-29\.parquet"):
        week_source(folder, "2026-11-29").load()
    single = FileSourceResource(path=str(tmp_path / f"{WEEK}.parquet"))
    with pytest.raises(DataSourceError, match="CHURN_SOURCE_PATH=.* is not a folder"):
        week_source(single, WEEK).load()


def test_a_sql_source_runs_the_weekly_query_with_the_weeks_bounds(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    weeks = [
        generate(SyntheticSpec(n_rows=n, as_of=w)) for n, w in ((40, WEEK), (60, "2026-11-22"))
    ]
    rows = pd.concat(
        [
            w.assign(snapshot_date=d)
            for w, d in zip(weeks, ("2026-11-17", "2026-11-23"), strict=True)
        ]
    )
    engine = sa.create_engine(url)
    rows.to_sql("customers", engine, index=False)
    engine.dispose()
    query = (
        "SELECT * FROM customers WHERE snapshot_date >= :week_start AND snapshot_date < :week_end"
    )
    source = SqlSourceResource(url=url, query="SELECT * FROM customers")
    got = week_source(source, WEEK, query).load()
    assert len(got.frame) == 40 and "week 2026-11-15" in got.description["location"]
    assert len(week_source(source, "2026-11-22", query).load().frame) == 60
    with pytest.raises(DataSourceError, match="returned no rows"):
        week_source(source, "2026-11-29", query).load()
    with pytest.raises(DataSourceError, match="CHURN_SCORES_QUERY .* lacks .*:week_end"):
        week_source(source, WEEK, "SELECT * FROM customers WHERE d >= :week_start").load()
    table_only = SqlSourceResource(url=url, table="customers")
    with pytest.raises(DataSourceError, match="set CHURN_SCORES_QUERY.*CHURN_SOURCE_TABLE"):
        week_source(table_only, WEEK).load()


def test_a_backfill_covers_every_week_from_the_first_day_to_the_last():
    partitions = dg.WeeklyPartitionsDefinition(start_date="2026-11-01")
    weeks = weeks_between(partitions, "2026-11-03", "2026-11-22")
    assert weeks == ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]
    assert weeks_between(partitions, "2026-11-10") == ["2026-11-08"]
    with pytest.raises(ValueError, match="not partitions of churn_scores"):
        weeks_between(partitions, "2026-10-20", "2026-11-08")
    with pytest.raises(ValueError, match="before --from"):
        weeks_between(partitions, "2026-11-22", "2026-11-01")


def test_a_weeks_parquet_is_upserted_in_batches_and_replaces_an_earlier_run(tmp_path: Path):
    """``upsert_parquet`` (the Spark engine's path) streams the file in batches of 5,000 rows
    into one transaction: every row lands, and a later run of the week with fewer customers
    leaves exactly its rows (the earlier run's extra customer is deleted)."""
    from churn_platform.resources.scores_table import ScoresTableResource

    database = ScoresTableResource(url=f"sqlite:///{tmp_path / 'scores.db'}")
    first = table(12_001, seed=3)
    path = tmp_path / "week.parquet"
    first.to_parquet(path, index=False)
    assert database.upsert_parquet("churn_scores", path) == 12_001
    back = database.read_week("churn_scores", WEEK)
    assert list(back["entity_id"]) == list(first["entity_id"])
    np.testing.assert_array_equal(back["probability"], first["probability"])
    later = IDENTITY.__class__(**{**IDENTITY.__dict__, "run_id": "run-2"})
    second = sc.score_table(first["entity_id"][1:], first["probability"][1:].to_numpy(), later)
    second.to_parquet(path, index=False)
    assert database.upsert_parquet("churn_scores", path) == 12_000
    back = database.read_week("churn_scores", WEEK)
    assert len(back) == 12_000 and set(back["run_id"]) == {"run-2"}
    assert first["entity_id"][0] not in set(back["entity_id"])
