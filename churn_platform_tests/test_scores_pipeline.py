"""``churn_scores`` through Dagster: a real MLflow SQLite store with a registered champion, the
synthetic world's weeks (few rows), a 4-week backfill in process, re-scoring with a newer
champion, the CLI, a week breaking the contract, the upsert into a real PostgreSQL, and the
weeks on an object store (moto over HTTP)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from churn_platform import cli
from churn_platform.backfill import PARTITION_TAG, backfill, weeks_between
from churn_platform.config import load_config
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.definitions import build_definitions
from churn_platform.defs import weekly_scores
from churn_platform.object_store import open_location, options_from_env
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.scores_table import ScoresTableResource
from churn_platform_tests.pipeline import release_champion, resource, step_error
from churn_platform_tests.postgres import PostgresServer, postgres_bin_dir, running_postgres
from churn_platform_tests.s3 import aws_environment, create_bucket, list_keys, running_moto

ROWS = 600
WEEKS = ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]


@pytest.fixture
def home(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", str(ROWS))
    for var in ("CHURN_SCORES_URL", "CHURN_SCORES_START", "CHURN_SYNTHETIC_AS_OF"):
        monkeypatch.delenv(var, raising=False)
    return churn_home


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")
    with running_postgres() as server:
        yield server


def scores_job() -> dg.JobDefinition:
    return build_definitions(load_config()).resolve_job_def("churn_weekly_scores")


def week_scores(home: Path, week: str) -> pd.DataFrame:
    return pd.read_parquet(home / "scores" / f"week={week}.parquet")


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    return {
        r.event_log_entry.dagster_event.event_specific_data.check_name: (
            r.event_log_entry.dagster_event.event_specific_data
        )
        for r in records
    }


def test_a_four_week_backfill_scores_each_week_and_a_new_champion_rescores(home: Path):
    first = release_champion(seed=3)
    job = scores_job()
    assert job.partitions_def is not None
    assert weeks_between(job.partitions_def, "2026-11-02", "2026-11-28") == WEEKS
    lines: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        done = backfill(job, instance, WEEKS, out=lines.append)
        assert [w.success for w in done] == [True] * 4, [w.line for w in done]
        key = dg.AssetKey("churn_scores")
        assert instance.get_materialized_partitions(key) == set(WEEKS)
        runs = [instance.get_run_by_id(w.run_id) for w in done]
        assert [r.tags[PARTITION_TAG] for r in runs if r] == WEEKS
        for week in WEEKS:
            scores = week_scores(home, week)
            drawn = generate(SyntheticSpec(n_rows=ROWS, as_of=week))
            assert sorted(scores["entity_id"]) == sorted(drawn["customer_id"].astype(str))
            assert set(scores["model_version"]) == {first} and set(scores["week"]) == {week}
            assert scores["rank"].tolist() == list(range(1, ROWS + 1))
        checks = check_evaluations(instance, done[1].run_id)
        assert all(c.passed for c in checks.values()), checks
        psi = checks["score_psi_vs_previous_week"].metadata["psi"].value
        assert isinstance(psi, float) and psi < 0.2  # the same mechanism week after week
        parity = checks["serving_parity"].metadata["max_difference"].value
        assert parity < 1e-6
        first_week = check_evaluations(instance, done[0].run_id)["score_psi_vs_previous_week"]
        assert "no scores of the previous week" in str(first_week.description)
        # re-scoring the past with the newer champion is the same command
        second = release_champion(seed=4)
        again = backfill(job, instance, WEEKS[:2], out=lines.append)
        assert all(w.success for w in again)
    for week in WEEKS[:2]:
        assert set(week_scores(home, week)["model_version"]) == {second}
    assert set(week_scores(home, WEEKS[2])["model_version"]) == {first}
    assert f"{ROWS} customers scored by v{second}" in again[0].line


def test_the_cli_scores_a_range_and_names_a_bad_one(home: Path, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    version = release_champion(seed=3)
    assert cli.main(["score", "--from", "2026-11-09", "--to", "2026-11-16"]) == 0
    out = capsys.readouterr().out
    assert "2/2 week(s) scored" in out and "2026-11-08 ok" in out and "2026-11-15 ok" in out
    assert set(week_scores(home, "2026-11-15")["model_version"]) == {version}
    assert cli.main(["score", "--from", "2026-10-01"]) == 2
    assert "not partitions of churn_scores" in capsys.readouterr().err


def test_a_week_breaking_the_contract_is_not_scored(home: Path):
    release_champion(seed=3)
    config = load_config()
    result = dg.materialize(
        [weekly_scores.build_asset(config.model(), config)],
        partition_key="2026-11-15",
        resources={
            **{k: resource(k) for k in ("storage", "mlflow_registry", "scores_table")},
            "data_source": SyntheticSourceResource(n_rows=ROWS, duplicate_ids=5),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = [
        e.event_specific_data.user_failure_data.description
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    assert "customer_id_unique" in failure[0] and "not scored" in failure[0], step_error(result)
    assert not (home / "scores" / "week=2026-11-15.parquet").exists()


def test_no_champion_is_a_clear_failure(home: Path):
    with dg.DagsterInstance.ephemeral() as instance:
        [week] = backfill(scores_job(), instance, ["2026-11-15"], out=lambda _: None)
    assert not week.success and "no 'champion' alias" in week.line


@pytest.mark.integration
def test_scores_are_upserted_into_postgresql_and_read_back(
    home: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CHURN_SCORES_URL", postgres.url)
    first = release_champion(seed=3)
    week = "2026-11-15"
    table = ScoresTableResource(url=postgres.url)
    with dg.DagsterInstance.ephemeral() as instance:
        [done] = backfill(scores_job(), instance, [week], out=lambda _: None)
        assert done.success, done.line
        assert "churn_scores at postgresql+psycopg2://churn@127.0.0.1" in done.line
        stored = table.read_week("churn_scores", week)
        parquet = week_scores(home, week)
        assert len(stored) == ROWS
        joined = parquet.merge(stored, on="entity_id", suffixes=("", "_db"))
        assert len(joined) == ROWS
        assert (joined["probability"] - joined["probability_db"]).abs().max() < 1e-12
        assert (joined["rank"] == joined["rank_db"]).all()
        assert set(stored["model_version"]) == {first}
        assert set(stored["data_version"]) == set(parquet["data_version"])
        second = release_champion(seed=4)
        [again] = backfill(scores_job(), instance, [week], out=lambda _: None)
        assert again.success, again.line
    replaced = table.read_week("churn_scores", week)
    assert len(replaced) == ROWS and set(replaced["model_version"]) == {second}
    engine = sa.create_engine(postgres.url)
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM churn_scores")).scalar_one()
        keys = conn.execute(
            sa.text(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'churn_scores'::regclass "
                "AND i.indisprimary"
            )
        ).scalars()
        primary = sorted(keys)
    engine.dispose()
    assert total == ROWS  # upserted in place, nothing appended
    assert primary == ["entity_id", "week"]
    # a later run of the week without a customer leaves no stale row behind
    smaller = week_scores(home, week).iloc[1:].assign(run_id="a-later-run")
    assert table.upsert("churn_scores", smaller) == ROWS - 1
    assert len(table.read_week("churn_scores", week)) == ROWS - 1


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_moto(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.mark.integration
def test_the_weeks_go_to_the_object_store_and_the_psi_reads_the_previous_one_there(
    home: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    bucket = f"churn-{uuid.uuid4().hex[:12]}"
    create_bucket(moto_endpoint, bucket)
    monkeypatch.setenv("CHURN_STORAGE_URL", f"s3://{bucket}/platform")
    version = release_champion(seed=3)
    with dg.DagsterInstance.ephemeral() as instance:
        done = backfill(scores_job(), instance, WEEKS[:2], out=lambda _: None)
        assert [w.success for w in done] == [True, True], [w.line for w in done]
        psi = check_evaluations(instance, done[1].run_id)["score_psi_vs_previous_week"]
    assert isinstance(psi.metadata["psi"].value, float)  # the previous week, read from S3
    keys = list_keys(moto_endpoint, bucket, "platform/scores/")
    assert keys == [f"platform/scores/week={w}.parquet" for w in WEEKS[:2]]
    assert not (home / "scores").exists()
    root = open_location(f"s3://{bucket}/platform", options_from_env())
    stored = pd.read_parquet(
        io.BytesIO((root / "scores" / f"week={WEEKS[1]}.parquet").read_bytes())
    )
    assert len(stored) == ROWS and set(stored["model_version"]) == {version}


def test_the_monday_schedule_requests_the_week_that_starts_the_day_before(home: Path):
    import datetime as dt

    schedule = build_definitions(load_config()).get_schedule_def("weekly_scoring")
    monday = dt.datetime(2026, 11, 16, 4, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=monday) as context:
        result = schedule.evaluate_tick(context)
    [request] = result.run_requests or []
    assert request.partition_key == "2026-11-15"
    assert schedule.cron_schedule == "0 4 * * 1"
