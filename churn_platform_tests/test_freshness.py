"""Freshness: Dagster 1.13 freshness policies on churn_snapshot and production_deployment (the
champion), windows from the settings, and ``freshness_notification`` judging them on a real
instance: an observation per change of state, one message (to a real local receiver) per
asset that fails. Ticks are evaluated at chosen times, so nothing waits on the clock."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from churn_platform.config import load_config
from churn_platform.core.freshness_rules import FAIL, PASS, UNKNOWN, WARN, FreshnessSettings
from churn_platform.definitions import build_definitions
from churn_platform.defs import freshness
from churn_platform.resources.storage import StorageResource
from churn_platform.settings import SettingsError
from churn_platform_tests.http_receiver import Receiver
from churn_platform_tests.test_notifications import UI, notifier, production_stand_in

DAY = 86_400.0


def test_the_policies_are_on_the_snapshot_and_the_champion(monkeypatch) -> None:
    monkeypatch.setenv("CHURN_SNAPSHOT_FAIL_DAYS", "20")
    graph = build_definitions().resolve_asset_graph()
    snapshot = graph.get(dg.AssetKey("churn_snapshot")).freshness_policy
    assert snapshot.fail_window.to_timedelta().days == 20
    assert snapshot.warn_window.to_timedelta().days == 8
    champion = graph.get(dg.AssetKey("production_deployment")).freshness_policy
    assert champion.fail_window.to_timedelta().days == 365
    assert graph.get(dg.AssetKey("challenger_model")).freshness_policy is None


def test_a_warning_window_not_shorter_than_the_failure_window_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("CHURN_SNAPSHOT_WARN_DAYS", "15")
    with pytest.raises(SettingsError, match="CHURN_\\*_WARN_DAYS below CHURN_\\*_FAIL_DAYS"):
        load_config()


@dg.asset(name="churn_snapshot")
def snapshot_stand_in() -> int:
    return 1


def test_one_message_per_asset_that_fails_its_policy(receiver: Receiver, tmp_path: Path) -> None:
    model = load_config().model()
    by_key = freshness.policies(model, FreshnessSettings())
    send = notifier(receiver)
    storage = StorageResource(base_url=str(tmp_path))
    assets = [snapshot_stand_in, production_stand_in("succeeded")]
    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize(assets, instance=instance)
        event = instance.get_latest_materialization_event(dg.AssetKey("churn_snapshot"))
        assert event is not None
        cursor, seen = None, []
        for days in (1, 9, 16, 17, 366):
            context = dg.build_sensor_context(instance=instance, cursor=cursor)
            result = freshness.freshness_tick(
                context, by_key, send, storage, event.timestamp + days * DAY
            )
            cursor = result.cursor
            seen.append(
                {
                    o.asset_key.to_user_string(): o.metadata["freshness_state"].value
                    for o in result.asset_events
                }
            )
            if days == 17:
                assert receiver.posts and len(receiver.posts) == 1  # no second message
    assert seen == [
        {"churn_snapshot": PASS, "production_deployment": PASS},
        {"churn_snapshot": WARN},
        {"churn_snapshot": FAIL},
        {},
        {"production_deployment": FAIL},
    ]
    snapshot, champion = receiver.bodies()
    assert snapshot["event"] == "not_fresh" and snapshot["reason"].startswith("churn_snapshot")
    assert "(fail after 15)" in snapshot["reason"]
    assert snapshot["link"] == f"{UI}/assets/churn_snapshot"
    assert champion["model_version"] == "6" and "production_deployment" in champion["reason"]


def test_an_asset_never_materialised_is_unknown_and_silent(
    receiver: Receiver, tmp_path: Path
) -> None:
    by_key = freshness.policies(load_config().model(), FreshnessSettings())
    with dg.DagsterInstance.ephemeral() as instance:
        result = freshness.freshness_tick(
            dg.build_sensor_context(instance=instance),
            by_key,
            notifier(receiver),
            StorageResource(base_url=str(tmp_path)),
            1e12,
        )
    assert {o.metadata["freshness_state"].value for o in result.asset_events} == {UNKNOWN}
    assert receiver.posts == []
