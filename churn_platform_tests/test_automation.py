"""The weekly schedule and the PSI drift sensor, against a real MLflow SQLite store.

A champion is registered the way ``challenger_model`` does it (a trained pipeline logged with
its ``reference_profile.json``), then the sensor is ticked with ``build_sensor_context``
against real data sources and a real inference log written by the model server's logger.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster._utils.schedules import cron_string_iterator

from churn_platform import settings
from churn_platform.config import load_config
from churn_platform.core import drift, training
from churn_platform.core import schema as s
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.definitions import build_definitions
from churn_platform.defs.automation import retraining_selection
from churn_platform.resources.data_source import FileSourceResource, SyntheticSourceResource
from churn_platform.resources.environments import resources_for_environment
from churn_platform.resources.notify import Notifier
from churn_platform.serving.inference_log import InferenceLog, default_inference_log_path
from churn_platform.serving.integration import records
from churn_platform.serving.server_settings import ServerSettings
from churn_platform.targets.local import LocalProcessTarget
from churn_platform_tests.pipeline import (
    FAST_GATE,
    FAST_MODEL,
    assets,
    materialize,
    materialized,
    resource,
    sensor,
    step_error,
)

FEATURES = [*s.NUMERIC_FEATURES, *s.CATEGORICAL_FEATURES, s.IS_ENTERPRISE]
STABLE = {"n_rows": 5_000, "seed": 7}
SHIFTED = {**STABLE, "spend_shift": 60.0}


@pytest.fixture
def home(churn_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``churn_home`` without any sensor or source setting leaking in from the environment."""
    for var in (
        "CHURN_PSI_THRESHOLD",
        "CHURN_DRIFT_MIN_ROWS",
        "CHURN_INFERENCE_LOG",
        "CHURN_SYNTHETIC_ROWS",
        "CHURN_SYNTHETIC_SEED",
        "CHURN_SYNTHETIC_SPEND_SHIFT",
    ):
        monkeypatch.delenv(var, raising=False)
    return churn_home


def register(train_rows: pd.DataFrame, with_profile: bool = True) -> tuple[str, Any]:
    """Train a small model on ``train_rows`` and register it as a new version (no alias)."""
    spec = default_spec()
    trained = training.train(train_rows, training.TrainingConfig(max_iter=10), spec)
    artifacts = (
        {"reference_profile.json": drift.build_reference_profile(train_rows, spec)}
        if with_profile
        else {}
    )
    registered = resource("mlflow_registry").log_and_register(
        trained.pipeline,
        input_example=training.model_inputs(train_rows, spec),
        params=trained.config.params(),
        metrics={"train_positive_rate": trained.train_positive_rate},
        tags={"origin": "test_automation"},
        json_artifacts=artifacts,
        run_name="test-champion",
        spec=spec,
    )
    return registered.version, trained.pipeline


@pytest.fixture
def champion(home: Path) -> dict[str, Any]:
    """Version 1 trained on 3,000 synthetic rows (seed 3), alias ``champion``."""
    train_rows = generate(SyntheticSpec(n_rows=3_000, seed=3))
    version, pipeline = register(train_rows)
    resource("mlflow_registry").set_alias("champion", version)
    return {"version": version, "pipeline": pipeline, "train_rows": train_rows}


def episode_state(cursor: str) -> dict[str, Any]:
    """The sensor cursor's episode fields (without the cached source PSI)."""
    state = json.loads(cursor)
    state.pop("source_cache", None)
    return state


def tick(
    data_source: Any, cursor: str | None = None, instance: dg.DagsterInstance | None = None
) -> Any:
    """One evaluation of the sensor as the daemon runs it (resources passed by key)."""
    context = dg.build_sensor_context(
        definitions=build_definitions(),
        cursor=cursor,
        resources={
            "mlflow_registry": resource("mlflow_registry"),
            "data_source": data_source,
            "inference_log": resource("inference_log"),
            "notifier": Notifier(),
            "storage": resource("storage"),
        },
        instance=instance or dg.DagsterInstance.ephemeral(),
    )
    return sensor("psi_drift_sensor").evaluate_tick(context)


def by_window(data: Any) -> dict[str, dict[str, Any]]:
    """The tick's observations: window name -> {metadata key: raw value}."""
    out = {}
    for event in data.asset_events:
        assert isinstance(event, dg.AssetObservation)
        assert event.asset_key == dg.AssetKey("churn_snapshot")
        meta = {k: v.value for k, v in event.metadata.items()}
        out[meta["drift_window"]] = meta
    return out


def test_stable_data_skips_and_lists_every_psi_value(champion):
    data = tick(SyntheticSourceResource(**STABLE))

    assert data.run_requests == []
    message = data.skip_message
    assert message.startswith("max PSI ") and "<= 0.2 (source_snapshot:" in message
    assert "inference_log: 0 rows, fewer than 200" in message  # no request was scored yet
    listed = dict(re.findall(r"(\w+)=([0-9.]+)", message))
    assert set(listed) == set(FEATURES)
    meta = by_window(data)["source_snapshot"]
    for feature in FEATURES:
        assert float(listed[feature]) == pytest.approx(meta[f"psi_{feature}"], abs=6e-4)
    assert max(float(v) for v in listed.values()) <= 0.2
    assert meta["max_psi"] <= 0.2 and meta["rows"] == STABLE["n_rows"]
    assert episode_state(data.cursor) == {
        "episode": 0,
        "in_drift": False,
        "champion": champion["version"],
    }


def test_drift_episode_requests_one_run_then_waits_for_it_to_end(champion):
    instance = dg.DagsterInstance.ephemeral()
    history = []

    def run(source: Any, cursor: str | None) -> Any:
        data = tick(source, cursor, instance)
        for event in data.asset_events:  # what the sensor daemon does with them
            instance.report_runless_asset_event(event)
        history.append(by_window(data)["source_snapshot"]["psi_monthly_spend"])
        return data

    first = run(SyntheticSourceResource(**SHIFTED), None)
    assert [r.run_key for r in first.run_requests] == ["drift-episode-1"]
    request = first.run_requests[0]
    assert request.tags["churn/trigger"] == "drift"
    assert request.tags["churn/drift_feature"] == s.MONTHLY_SPEND
    assert request.tags["churn/drift_window"] == "source_snapshot"
    assert request.job_name in (None, "churn_retraining")
    assert first.skip_message is None
    cursor = episode_state(first.cursor)
    assert cursor == {"episode": 1, "in_drift": True, "champion": champion["version"]}
    meta = by_window(first)["source_snapshot"]
    assert meta["psi_monthly_spend"] > 0.2 and meta["max_psi_feature"] == s.MONTHLY_SPEND
    assert all(meta[f"psi_{f}"] < 0.2 for f in FEATURES if f != s.MONTHLY_SPEND)

    same_episode = run(SyntheticSourceResource(**SHIFTED), first.cursor)
    assert same_episode.run_requests == []
    assert "drift episode 1 continues" in same_episode.skip_message
    assert episode_state(same_episode.cursor)["episode"] == 1
    assert episode_state(same_episode.cursor)["in_drift"] is True

    ended = run(SyntheticSourceResource(**STABLE), same_episode.cursor)
    assert ended.run_requests == []
    assert ended.skip_message.startswith("max PSI")
    assert episode_state(ended.cursor) == {
        "episode": 1,
        "in_drift": False,
        "champion": champion["version"],
    }

    again = run(SyntheticSourceResource(**SHIFTED), ended.cursor)
    assert [r.run_key for r in again.run_requests] == ["drift-episode-2"]
    assert episode_state(again.cursor)["episode"] == 2

    # PSI over time: every tick left an observation with numeric psi_<feature> metadata,
    # which is what the Dagster UI plots
    stored = instance.fetch_observations(dg.AssetKey("churn_snapshot"), limit=20).records
    assert len(stored) == 4
    series = []
    for record in sorted(stored, key=lambda r: r.storage_id):
        metadata = record.asset_observation.metadata
        for feature in FEATURES:
            assert isinstance(metadata[f"psi_{feature}"], dg.FloatMetadataValue), feature
        series.append(metadata["psi_monthly_spend"].value)
    assert series == pytest.approx(history)
    assert series[0] > 0.2 and series[1] > 0.2 and series[2] < 0.2 and series[3] > 0.2


def test_a_new_champion_starts_a_new_episode(champion):
    shifted = SyntheticSourceResource(**SHIFTED)
    first = tick(shifted)
    assert [r.run_key for r in first.run_requests] == ["drift-episode-1"]
    # the retrained model was rolled out, but data kept drifting away from its reference
    version, _ = register(generate(SyntheticSpec(n_rows=3_000, seed=4)))
    resource("mlflow_registry").set_alias("champion", version)
    second = tick(shifted, first.cursor)
    assert [r.run_key for r in second.run_requests] == ["drift-episode-2"]
    assert second.run_requests[0].tags["churn/champion_version"] == version
    assert episode_state(second.cursor) == {"episode": 2, "in_drift": True, "champion": version}


def test_threshold_is_read_at_tick_time(champion, monkeypatch):
    monkeypatch.setenv("CHURN_PSI_THRESHOLD", "50")
    data = tick(SyntheticSourceResource(**SHIFTED))
    assert data.run_requests == [] and "<= 50.0" in data.skip_message
    monkeypatch.setenv("CHURN_PSI_THRESHOLD", "lots")
    with pytest.raises(Exception, match="CHURN_PSI_THRESHOLD='lots' is not a number"):
        tick(SyntheticSourceResource(**SHIFTED))


def test_cursor_of_an_older_sensor_is_honoured_and_a_garbled_one_is_named(champion):
    legacy = json.dumps({"episode": 4, "in_drift": True})  # written before "champion" existed
    data = tick(SyntheticSourceResource(**SHIFTED), legacy)
    assert data.run_requests == [] and "drift episode 4 continues" in data.skip_message
    assert episode_state(data.cursor)["champion"] == champion["version"]
    with pytest.raises(Exception, match="is not this sensor's JSON state"):
        tick(SyntheticSourceResource(**SHIFTED), "episode=4")


def test_unseen_region_is_counted_not_a_crash(champion, home):
    frame = generate(SyntheticSpec(**STABLE))
    frame.loc[frame.index[:250], s.REGION] = "atlantis"
    path = home / "snapshot.parquet"
    frame.to_parquet(path, index=False)
    source = FileSourceResource(path=str(path))

    data = tick(source)

    meta = by_window(data)["source_snapshot"]
    assert meta["unseen_region"] == 250
    assert meta["unseen_contract_type"] == 0
    spec = default_spec()
    profile = json.loads(json.dumps(drift.build_reference_profile(champion["train_rows"], spec)))
    direct = drift.psi(profile, source.snapshot(spec)[0].frame)
    assert direct.unseen_counts[s.REGION] == 250
    assert meta["psi_region"] == pytest.approx(direct.psi[s.REGION], abs=1e-5)
    # 5% of rows in a region training never saw is drift on region, and only there
    assert meta["psi_region"] > 0.2 and meta["max_psi_feature"] == s.REGION
    assert [r.tags["churn/drift_feature"] for r in data.run_requests] == [s.REGION]


def test_empty_windows_skip_with_the_reason_and_keep_the_cursor(champion, home):
    cursor = json.dumps({"episode": 3, "in_drift": False, "champion": champion["version"]})
    small = tick(SyntheticSourceResource(n_rows=50, seed=7), cursor)
    assert small.run_requests == [] and small.asset_events == []
    assert small.skip_message == (
        "no window to judge drift on: source_snapshot: 50 rows, fewer than 200; "
        "inference_log: 0 rows, fewer than 200"
    )
    assert episode_state(small.cursor) == json.loads(cursor)

    missing = tick(FileSourceResource(path=str(home / "nowhere.parquet")), cursor)
    assert missing.run_requests == []
    assert "source_snapshot: unreadable (" in missing.skip_message
    assert "nowhere.parquet does not exist" in missing.skip_message
    assert episode_state(missing.cursor)["episode"] == 3


def write_inference_log(version: str, frame: pd.DataFrame, pipeline: Any) -> Path:
    """Score ``frame`` with ``pipeline`` and log it with the model server's own logger."""
    path = default_inference_log_path(version, ServerSettings(home=settings.churn_home()))
    log = InferenceLog(path, version, flush_records=100_000, flush_seconds=3600.0)
    for start in range(0, len(frame), 100):  # requests of 100 records, as clients send them
        chunk = frame.iloc[start : start + 100]
        log.append(records(chunk, default_spec()), training.predict_proba(pipeline, chunk).tolist())
    log.flush()
    return path


def test_sensor_fires_on_the_champions_inference_log_when_the_source_is_stable(champion, home):
    version = champion["version"]
    shifted = generate(SyntheticSpec(n_rows=1_000, seed=11, spend_shift=60.0))
    other = write_inference_log("99", shifted, champion["pipeline"])  # not the champion
    assert other.is_file()
    quiet = tick(SyntheticSourceResource(**STABLE))
    assert quiet.run_requests == [] and "inference_log: 0 rows" in quiet.skip_message

    path = write_inference_log(version, shifted, champion["pipeline"])
    assert path == home / "inference_log" / f"{version}.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 1_000
    assert json.loads(lines[0])["model_version"] == version

    data = tick(SyntheticSourceResource(**STABLE))

    assert [r.run_key for r in data.run_requests] == ["drift-episode-1"]
    assert data.run_requests[0].tags["churn/drift_window"] == "inference_log"
    assert data.run_requests[0].tags["churn/drift_feature"] == s.MONTHLY_SPEND
    windows = by_window(data)
    assert windows["source_snapshot"]["max_psi"] <= 0.2
    assert windows["inference_log"]["rows"] == 1_000
    assert windows["inference_log"]["psi_monthly_spend"] > 0.2


def test_no_champion_skips_saying_so(home):
    data = tick(SyntheticSourceResource(**SHIFTED))
    assert data.run_requests == []
    assert data.skip_message.startswith("no champion is registered yet")
    # a registered version without the champion alias does not count either
    version, _ = register(generate(SyntheticSpec(n_rows=3_000, seed=3)))
    resource("mlflow_registry").set_alias("challenger", version)
    assert tick(SyntheticSourceResource(**SHIFTED)).skip_message.startswith("no champion")


def test_champion_without_reference_profile_skips_with_the_reason(home):
    version, _ = register(generate(SyntheticSpec(n_rows=3_000, seed=3)), with_profile=False)
    resource("mlflow_registry").set_alias("champion", version)
    data = tick(SyntheticSourceResource(**SHIFTED))
    assert data.run_requests == []
    assert f"champion version {version}" in data.skip_message
    assert "has no reference_profile.json" in data.skip_message


def test_weekly_schedule_is_monday_0200_utc_and_requests_the_retraining_job(home):
    schedule = build_definitions().get_schedule_def("weekly_retraining")
    assert schedule.cron_schedule == "0 2 * * 1" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "churn_retraining"
    wednesday = datetime(2026, 11, 25, 15, 0, tzinfo=UTC).timestamp()
    ticks = cron_string_iterator(wednesday, schedule.cron_schedule, "UTC")
    assert [next(ticks) for _ in range(2)] == [
        datetime(2026, 11, 30, 2, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 2, 0, tzinfo=UTC),
    ]

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 30, 2, 0, tzinfo=UTC),
            repository_def=build_definitions().get_repository_def(),
        )
        data = schedule.evaluate_tick(context)
    assert len(data.run_requests) == 1
    assert data.run_requests[0].job_name in (None, "churn_retraining")
    # the synthetic world's first week on a fresh instance (a real source: the current week)
    assert data.run_requests[0].partition_key == "2026-11-01"

    six = {
        "churn_snapshot",
        "validated_churn_data",
        "holdout_set",
        "challenger_model",
        "evaluation_report",
        "staging_deployment",
    }
    job = build_definitions().resolve_job_def("churn_retraining")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == six
    model = load_config().model()
    assert {k.to_user_string() for k in retraining_selection(model, False).resolve(assets())} == six


def test_auto_release_adds_production_to_the_retraining_selection(monkeypatch):
    monkeypatch.setenv("CHURN_AUTO_RELEASE", "1")
    job = build_definitions().resolve_job_def("churn_retraining")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert "production_deployment" in keys and len(keys) == 7
    monkeypatch.setenv("CHURN_AUTO_RELEASE", "0")
    job = build_definitions().resolve_job_def("churn_retraining")
    assert "production_deployment" not in {
        k.to_user_string() for k in job.asset_layer.executable_asset_keys
    }


@pytest.mark.integration
@pytest.mark.slow
def test_a_drift_run_request_materialises_the_retraining_selection(champion, home, monkeypatch):
    monkeypatch.setenv("CHURN_SOURCE", "synthetic")
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", "8000")
    monkeypatch.setenv("CHURN_SYNTHETIC_SPEND_SHIFT", "60")
    resources = resources_for_environment()
    data = tick(resources["data_source"])
    assert [r.run_key for r in data.run_requests] == ["drift-episode-1"]
    request = data.run_requests[0]

    instance = dg.DagsterInstance.ephemeral()
    stopped: list[int] = []
    try:
        result = (
            build_definitions()
            .resolve_job_def("churn_retraining")
            .execute_in_process(
                instance=instance,
                tags=request.tags,
                run_config={
                    "ops": {
                        "challenger_model": {"config": FAST_MODEL},
                        "evaluation_report": {"config": FAST_GATE},
                    }
                },
                raise_on_error=False,
            )
        )
    finally:
        stopped = LocalProcessTarget(home / "deployments").stop_all()

    assert result.success, step_error(result)
    assert materialized(result) == {
        "churn_snapshot",
        "validated_churn_data",
        "holdout_set",
        "challenger_model",
        "evaluation_report",
        "staging_deployment",
    }
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["churn/trigger"] == "drift"
    assert run.tags["churn/drift_feature"] == s.MONTHLY_SPEND
    assert run.tags["dagster/sensor_name"] == "psi_drift_sensor"
    # the model retrained on drifted data beats the old champion on the drifted holdout and
    # is staged beside it; production (and so the champion alias) waits for a person
    report = result.output_for_node("evaluation_report")
    assert report.champion_version == champion["version"] and report.promote is True
    staged = result.output_for_node("staging_deployment")
    assert staged.action == "deploy" and staged.candidate == "2"
    assert staged.baseline == champion["version"]
    assert stopped  # real model-server processes were running
    registry = resource("mlflow_registry")
    assert registry.alias_version("challenger") == "2"
    assert registry.alias_version("champion") == champion["version"]


def test_an_unchanged_source_file_is_not_read_again(champion, home):
    path = home / "current.csv"
    generate(SyntheticSpec(**SHIFTED)).to_csv(path, index=False)
    source = FileSourceResource(path=str(path))
    first = tick(source)
    assert len(first.run_requests) == 1
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns

    # same size and modification time, unreadable content: a re-read would fail loudly
    path.write_bytes(b"\x00" * size)
    os.utime(path, ns=(mtime, mtime))
    cached = tick(source, first.cursor)
    assert "drift episode 1 continues" in cached.skip_message
    assert "unreadable" not in cached.skip_message
    meta = by_window(cached)["source_snapshot"]  # the history still gets this tick's reading
    assert meta["psi_monthly_spend"] == by_window(first)["source_snapshot"]["psi_monthly_spend"]

    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # the file changed: read it again
    reread = tick(source, cached.cursor)
    assert "source_snapshot: unreadable" in reread.skip_message


@pytest.mark.integration
def test_the_synthetic_source_is_read_as_next_week_and_a_snapshot_moves_it_on(
    champion, home, monkeypatch
):
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", "1000")
    instance = dg.DagsterInstance.ephemeral()
    source = SyntheticSourceResource(**STABLE)

    def fingerprint(data: Any) -> str:
        return json.loads(data.cursor)["source_cache"]["fingerprint"]

    first = tick(source, None, instance)
    assert '"as_of": "2026-11-01"' in fingerprint(first)  # no snapshot yet: week 0 comes next
    same = tick(source, first.cursor, instance)
    assert fingerprint(same) == fingerprint(first)  # nothing happened: the cache holds

    snapshot = materialize(["churn_snapshot"], instance)  # a run draws week 0
    assert snapshot.success, step_error(snapshot)
    moved = tick(source, same.cursor, instance)
    assert '"as_of": "2026-11-08"' in fingerprint(moved)  # the next run draws week 1


def test_every_tick_writes_the_psi_per_feature_the_router_exports(champion, home):
    from churn_platform.core.drift_monitor import PSI_EXPORT_KEY, parse_psi_export

    document = home / PSI_EXPORT_KEY
    assert not document.exists()
    data = tick(SyntheticSourceResource(**STABLE))
    at, samples = parse_psi_export(document.read_text())
    assert at is not None
    meta = by_window(data)["source_snapshot"]
    exported = {s.feature: s.psi for s in samples if s.window == "source_snapshot"}
    assert set(exported) == set(FEATURES)
    for feature, value in exported.items():
        assert value == pytest.approx(meta[f"psi_{feature}"], abs=1e-5)
    assert {s.model_version for s in samples} == {champion["version"]}
