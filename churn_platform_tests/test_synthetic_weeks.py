"""A second run is a new week: the synthetic source draws each week's customers from the same
mechanism, the same week always gives the same rows, and a second run's gate sees new data."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_platform.core import schema as s
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import (
    BASE_AS_OF,
    SyntheticSpec,
    generate,
    week_of,
    week_start,
)
from churn_platform.resources.data_source import (
    DataSourceError,
    FileSourceResource,
    SyntheticSourceResource,
)
from churn_platform_tests.pipeline import (
    FAST_GATE,
    THROUGH_EVALUATION,
    materialize,
    registry,
    step_error,
)

ROWS = 4_000


def test_the_same_week_draws_the_same_rows_whatever_the_day():
    monday = generate(SyntheticSpec(n_rows=500, as_of="2026-11-09"))
    saturday = generate(SyntheticSpec(n_rows=500, as_of="2026-11-14"))
    pd.testing.assert_frame_equal(monday, saturday)
    assert week_of("2026-11-09") == week_of("2026-11-14") == 1
    assert week_start(1) == "2026-11-08" and week_of(BASE_AS_OF) == 0


def test_two_weeks_draw_different_customers_from_the_same_mechanism():
    one = generate(SyntheticSpec(n_rows=ROWS, as_of=week_start(1)))
    two = generate(SyntheticSpec(n_rows=ROWS, as_of=week_start(2)))
    assert list(one[s.CUSTOMER_ID]) == list(two[s.CUSTOMER_ID])  # the same customer base
    for column in (s.MONTHLY_SPEND, s.TENURE_MONTHS, s.LAST_LOGIN_HOUR):
        assert (one[column] != two[column]).mean() > 0.8, column
    # the same mechanism: churn rate, contract mix and spend level agree within sampling noise
    assert one[s.TARGET].mean() == pytest.approx(two[s.TARGET].mean(), abs=0.04)
    mix_one = one[s.CONTRACT_TYPE].value_counts(normalize=True)
    mix_two = two[s.CONTRACT_TYPE].value_counts(normalize=True)
    assert np.allclose(mix_one.sort_index(), mix_two.sort_index(), atol=0.04)
    assert one[s.MONTHLY_SPEND].median() == pytest.approx(two[s.MONTHLY_SPEND].median(), rel=0.05)
    # signup dates are counted back from each week's own snapshot date
    assert one[s.SIGNUP_DATE].max() <= pd.Timestamp(week_start(1))
    assert two[s.SIGNUP_DATE].max() <= pd.Timestamp(week_start(2))


def test_week_zero_is_the_original_draw_and_drift_knobs_apply_per_week():
    pd.testing.assert_frame_equal(
        generate(SyntheticSpec(n_rows=300)), generate(SyntheticSpec(n_rows=300, as_of=BASE_AS_OF))
    )
    # the generator's original rows (seed 7), as drawn before weeks existed
    assert generate(SyntheticSpec(n_rows=5))[s.LAST_LOGIN_HOUR].tolist() == [17, 8, 11, 0, 14]
    calm = generate(SyntheticSpec(n_rows=ROWS, as_of=week_start(3)))
    drifted = generate(SyntheticSpec(n_rows=ROWS, as_of=week_start(3), spend_shift=60.0))
    assert (drifted[s.MONTHLY_SPEND] - calm[s.MONTHLY_SPEND]).median() == pytest.approx(60.0)


def test_a_bad_as_of_names_the_knob_and_the_format():
    with pytest.raises(ValueError, match="as_of must be a date YYYY-MM-DD, got 'next monday'"):
        SyntheticSpec(as_of="next monday")
    with pytest.raises(DataSourceError, match="synthetic source config: as_of must be a date"):
        SyntheticSourceResource(as_of="2026-02-30").load()


def test_the_resource_draws_the_week_it_is_given_unless_a_date_pins_it(tmp_path: Path):
    source = SyntheticSourceResource(n_rows=200)
    week_two = source.dated(2)
    assert week_two.load().description["week"] == 2
    assert week_two.load().description["as_of"] == week_start(2)
    assert source.load().description["week"] == 0  # undated: week 0
    # the drift sensor's cache key changes with the week, and only with it
    shipped = default_spec()
    assert source.dated(1).fingerprint(shipped) != source.dated(2).fingerprint(shipped)
    assert source.dated(2).fingerprint(shipped) == week_two.fingerprint(shipped)
    pinned = SyntheticSourceResource(n_rows=200, as_of="2026-11-18")
    assert pinned.dated(7).load().description["week"] == week_of("2026-11-18") == 2
    files = FileSourceResource(path=str(tmp_path))
    assert files.dated(5) is files  # a file holds what it holds now


@pytest.fixture
def synthetic_home(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", str(ROWS))
    for var in ("CHURN_SYNTHETIC_AS_OF", "CHURN_SYNTHETIC_SEED", "CHURN_SYNTHETIC_SPEND_SHIFT"):
        monkeypatch.delenv(var, raising=False)
    return churn_home


def snapshot_meta(instance: dg.DagsterInstance) -> dict[str, object]:
    event = instance.get_latest_materialization_event(dg.AssetKey("churn_snapshot"))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.mark.integration
def test_a_second_run_draws_next_week_and_its_gate_sees_a_nonzero_delta(
    synthetic_home: Path, monkeypatch: pytest.MonkeyPatch
):
    instance = dg.DagsterInstance.ephemeral()
    relaxed = {"n_resamples": 200, "min_auc": 0.5, "min_slice_auc": 0.5}
    config = {"challenger_model": {"config": relaxed}, "evaluation_report": {"config": FAST_GATE}}
    first = materialize(THROUGH_EVALUATION, instance, config)
    assert first.success, step_error(first)
    week_zero = snapshot_meta(instance)
    assert week_zero["synthetic_week"] == 0 and week_zero["synthetic_as_of"] == BASE_AS_OF
    registry().set_alias("champion", "1")  # as if v1 had been rolled out

    second = materialize(THROUGH_EVALUATION, instance, config)
    assert second.success, step_error(second)
    week_one = snapshot_meta(instance)
    assert week_one["synthetic_week"] == 1 and week_one["data_version"] != week_zero["data_version"]
    report = instance.get_latest_materialization_event(dg.AssetKey("evaluation_report"))
    assert report is not None and report.asset_materialization is not None
    delta = report.asset_materialization.metadata["auc_delta"].value
    assert isinstance(delta, float) and delta != 0.0  # a new model, not the same one again

    # a pinned date draws that week however many runs came before
    monkeypatch.setenv("CHURN_SYNTHETIC_AS_OF", "2026-11-03")
    pinned = materialize(["churn_snapshot"], instance)
    assert pinned.success, step_error(pinned)
    assert snapshot_meta(instance)["synthetic_week"] == 0
    assert snapshot_meta(instance)["data_version"] == week_zero["data_version"]


@pytest.mark.integration
def test_two_runs_snapshotting_at_the_same_instant_keep_their_own_files(
    synthetic_home: Path, tmp_path: Path
):
    """Issue #27.7, with weekly partitions: the week is the run's partition, chosen when the
    run is requested. Two runs of the same week at the same instant (the schedule and a
    sensor) draw the same rows, each into its own file; two weeks draw different rows."""
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))  # SQLite, as the CLI
    start = threading.Barrier(3, timeout=60)
    results: dict[str, list[dg.ExecuteInJobResult]] = {}

    def run(week: str) -> None:
        start.wait()
        result = materialize(["churn_snapshot"], instance, week=week)
        results.setdefault(week, []).append(result)

    weeks = ["2026-11-08", "2026-11-08", "2026-11-15"]
    threads = [threading.Thread(target=run, args=(week,)) for week in weeks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    done = [r for week in results.values() for r in week]
    assert len(done) == 3 and all(r.success for r in done), [step_error(r) for r in done]

    def meta(result: dg.ExecuteInJobResult) -> dict:
        [event] = result.get_asset_materialization_events()
        materialization = event.step_materialization_data.materialization
        return {k: v.value for k, v in materialization.metadata.items()}

    same = [meta(r) for r in results["2026-11-08"]]
    other = meta(results["2026-11-15"][0])
    assert [m["synthetic_week"] for m in same] == [1, 1] and other["synthetic_week"] == 2
    assert same[0]["data_version"] == same[1]["data_version"] != other["data_version"]
    assert same[0]["parquet"] != same[1]["parquet"]
    instance.dispose()
