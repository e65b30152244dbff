"""Weekly partitions of the data: the week a run takes, each source reading its week, training
on a window of weeks, and a backfill of weeks from the command line."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from churn_platform.config import load_config
from churn_platform.core import weeks as w
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.settings import SettingsError
from churn_platform_tests.pipeline import (
    FAST_MODEL,
    THROUGH_MODEL,
    materialize,
    step_error,
)

LAST = "2027-10-24"
VALIDATED = dg.AssetKey("validated_churn_data")
SNAPSHOT = dg.AssetKey("churn_snapshot")


def _meta(instance: dg.DagsterInstance, key: dg.AssetKey, week: str | None = None) -> dict:
    if week is None:
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization is not None
        found = event.asset_materialization
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[week]), limit=1
        ).records
        assert records, f"no materialisation of {key.to_user_string()}[{week}]"
        found = records[0].asset_materialization
    return {k: v.value for k, v in found.metadata.items()}


def test_the_week_a_run_takes_follows_the_synthetic_clock_or_today() -> None:
    cfg = w.WeeksConfig("2026-11-01")
    today = dt.date(2026, 12, 9)  # a Wednesday
    assert w.week_to_run([], cfg, True, today, LAST) == "2026-11-01"
    assert w.week_to_run(["2026-11-08", "2026-11-01"], cfg, True, today, LAST) == "2026-11-15"
    assert w.week_to_run([LAST], cfg, True, today, LAST) == LAST  # the calendar's end: again
    assert w.week_to_run(["2026-11-01"], cfg, False, today, LAST) == "2026-12-06"
    assert w.week_to_run([], cfg, False, dt.date(2026, 10, 1), LAST) == "2026-11-01"


def test_the_training_window_holds_the_validated_weeks_ending_at_the_run() -> None:
    held = {"2026-11-01", "2026-11-15", "2026-11-22"}
    assert w.training_window("2026-11-22", held, 1) == ["2026-11-22"]
    assert w.training_window("2026-11-22", held, 3) == ["2026-11-15", "2026-11-22"]
    assert w.training_window("2026-11-22", held, 4) == ["2026-11-01", "2026-11-15", "2026-11-22"]
    with pytest.raises(ValueError, match="week 2026-11-08 has no validated_churn_data"):
        w.training_window("2026-11-08", held, 2)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("CHURN_WEEKS_START", "2026-11-02", "must be a Sunday .* use 2026-11-01"),
        ("CHURN_WEEKS_START", "soon", "CHURN_WEEKS_START"),
        ("CHURN_TRAINING_WEEKS", "0", "CHURN_TRAINING_WEEKS"),
    ],
)
def test_a_bad_calendar_setting_is_named(
    churn_home: Path, name: str, value: str, words: str
) -> None:
    with pytest.raises(SettingsError, match=words):
        load_config({"CHURN_HOME": str(churn_home), name: value})


def test_two_synthetic_weeks_partition_the_graph_and_training_reads_both(
    churn_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", "4000")
    monkeypatch.setenv("CHURN_TRAINING_WEEKS", "2")
    instance = dg.DagsterInstance.ephemeral()
    ops = {"challenger_model": {"config": FAST_MODEL}}
    first = materialize(THROUGH_MODEL, instance, ops)
    assert first.success, step_error(first)
    second = materialize(THROUGH_MODEL, instance, ops)
    assert second.success, step_error(second)
    assert [
        first.dagster_run.tags["dagster/partition"],
        second.dagster_run.tags["dagster/partition"],
    ] == ["2026-11-01", "2026-11-08"]
    assert instance.get_materialized_partitions(VALIDATED) == {"2026-11-01", "2026-11-08"}
    assert instance.get_materialized_partitions(SNAPSHOT) == {"2026-11-01", "2026-11-08"}
    week0, week1 = (
        _meta(instance, VALIDATED, "2026-11-01"),
        _meta(instance, VALIDATED, "2026-11-08"),
    )
    assert week0["week"] == "2026-11-01" and week1["week"] == "2026-11-08"
    assert week0["data_version"] != week1["data_version"]  # each week its own draw

    models = [
        {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
        for result in (first, second)
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key.to_user_string() == "challenger_model"
    ]
    one, two = models
    assert one["training_weeks"] == "2026-11-01"
    assert two["training_weeks"] == "2026-11-01, 2026-11-08"
    assert one["data_version"] == week0["data_version"]
    assert two["data_version"] not in (week0["data_version"], week1["data_version"])
    # both weeks' rows were available to training, less the holdout customers of each
    assert two["n_available_rows"] > 1.5 * one["n_available_rows"]
    holdout = _meta(instance, dg.AssetKey("holdout_set"))
    assert holdout["week"] == "2026-11-08"


def test_a_weekly_folder_gives_each_partition_its_weeks_file(
    churn_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = churn_home / "weeks"
    folder.mkdir()
    generate(SyntheticSpec(n_rows=2500, seed=1)).to_parquet(folder / "2026-11-01.parquet")
    generate(SyntheticSpec(n_rows=3100, seed=2)).to_csv(folder / "2026-11-08.csv", index=False)
    monkeypatch.setenv("CHURN_SOURCE", "file")
    monkeypatch.setenv("CHURN_SOURCE_PATH", str(folder))
    instance = dg.DagsterInstance.ephemeral()
    names = ["churn_snapshot", "validated_churn_data"]
    for week, rows in (("2026-11-08", 3100), ("2026-11-01", 2500)):
        result = materialize(names, instance, week=week)
        assert result.success, step_error(result)
        assert _meta(instance, VALIDATED, week)["rows"] == rows
    missing = materialize(names, instance, week="2026-11-15")
    assert not missing.success
    error = step_error(missing)
    assert "no file for week 2026-11-15" in error and "2026-11-15.parquet" in error


def test_a_weekly_sql_query_reads_the_weeks_rows(
    churn_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = []
    for week, rows, seed in (("2026-11-01", 2200, 3), ("2026-11-08", 2700, 4)):
        frame = generate(SyntheticSpec(n_rows=rows, seed=seed))
        frame["snapshot_date"] = week
        frames.append(frame)
    database = churn_home / "customers.db"
    with sqlite3.connect(database) as conn:
        pd.concat(frames).to_sql("customers", conn, index=False)
    monkeypatch.setenv("CHURN_SOURCE", "sql")
    monkeypatch.setenv("CHURN_SOURCE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("CHURN_SOURCE_TABLE", "customers")  # the whole table: every week
    monkeypatch.setenv(
        "CHURN_SCORES_QUERY",
        "SELECT * FROM customers WHERE snapshot_date >= :week_start AND snapshot_date < :week_end",
    )
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(["churn_snapshot", "validated_churn_data"], instance, week="2026-11-08")
    assert result.success, step_error(result)
    assert _meta(instance, VALIDATED, "2026-11-08")["rows"] == 2700
    assert "query for week 2026-11-08" in _meta(instance, SNAPSHOT, "2026-11-08")["source"]


def test_the_data_command_backfills_four_weeks_one_partition_each(churn_home: Path) -> None:
    env = {
        **os.environ,
        "CHURN_HOME": str(churn_home),
        "DAGSTER_HOME": str(churn_home / "dagster"),
        "CHURN_SYNTHETIC_ROWS": "2000",
    }
    command = [sys.executable, "-m", "churn_platform", "data"]
    done = subprocess.run(
        [*command, "--from", "2026-11-03", "--to", "2026-11-26"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4/4 week(s) snapshotted and validated" in done.stdout
    with dg.DagsterInstance.from_config(str(churn_home / "dagster")) as instance:
        assert instance.get_materialized_partitions(VALIDATED) == {
            "2026-11-01",
            "2026-11-08",
            "2026-11-15",
            "2026-11-22",
        }
        rows = {
            _meta(instance, VALIDATED, week)["data_version"]
            for week in ("2026-11-01", "2026-11-22")
        }
        assert len(rows) == 2
        runs = instance.get_run_records()
        assert len(runs) == 4
        assert len({r.dagster_run.tags.get("churn/backfill") for r in runs}) == 1
    before = subprocess.run(
        [*command, "--from", "2026-10-01"], env=env, capture_output=True, text=True, timeout=300
    )
    assert before.returncode == 2
    assert "CHURN_WEEKS_START" in before.stderr and "2026-09-27" in before.stderr
