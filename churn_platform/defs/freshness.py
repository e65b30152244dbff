"""Freshness of one model's snapshot and champion: Dagster freshness policies on
``churn_snapshot`` and ``production_deployment`` (the release that made the champion), shown
in the UI, and ``freshness_notification``, which tells people once when one fails.

The policies are Dagster 1.13's ``dg.FreshnessPolicy.time_window`` (the UI shows each asset's
policy, and its state when the instance's freshness daemon runs: ``freshness: enabled:
true`` in ``deploy/local/dagster.yaml``). The sensor judges the same windows itself
(``core.freshness_rules.freshness_state``), so a notification does not depend on that daemon,
records every change of state as an observation of the asset (its ``freshness_state``
metadata in the UI) and sends one ``not_fresh`` message per stale materialisation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from churn_platform.config import ModelConfig
from churn_platform.core.freshness_rules import (
    DAY,
    FAIL,
    FreshnessSettings,
    freshness_state,
    parse_states,
)
from churn_platform.defs.common import asset_key
from churn_platform.resources.notify import NOT_FRESH, Message, Notifier, deliver
from churn_platform.resources.storage import StorageResource

SNAPSHOT, CHAMPION = "churn_snapshot", "production_deployment"


def policies(model: ModelConfig, windows: FreshnessSettings) -> dict[dg.AssetKey, Any]:
    """``model``'s freshness policies by asset key."""

    def policy(warn: float, fail: float) -> Any:
        return dg.FreshnessPolicy.time_window(
            fail_window=timedelta(days=fail), warn_window=timedelta(days=warn)
        )

    return {
        asset_key(model, SNAPSHOT): policy(windows.snapshot_warn_days, windows.snapshot_fail_days),
        asset_key(model, CHAMPION): policy(windows.champion_warn_days, windows.champion_fail_days),
    }


def with_policies(
    assets: Sequence[dg.AssetsDefinition], model: ModelConfig, windows: FreshnessSettings
) -> list[dg.AssetsDefinition]:
    """``assets`` with ``model``'s freshness policies attached."""
    by_key = policies(model, windows)

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        policy = by_key.get(spec.key)
        return dg.apply_freshness_policy(spec, policy) if policy else spec

    return [a.map_asset_specs(attach) if set(a.keys) & set(by_key) else a for a in assets]


def build_freshness_notification(
    model: ModelConfig, windows: FreshnessSettings
) -> dg.SensorDefinition:
    """``model``'s freshness sensor."""
    by_key = policies(model, windows)

    @dg.sensor(
        name=model.named("freshness_notification"),
        minimum_interval_seconds=600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Judges the freshness policies of churn_snapshot (warn after "
        f"{windows.snapshot_warn_days:g} days, fail after {windows.snapshot_fail_days:g}) and "
        f"production_deployment (the champion: {windows.champion_warn_days:g} / "
        f"{windows.champion_fail_days:g} days); records each change of state as an "
        "observation and sends one not_fresh message per stale materialisation.",
    )
    def freshness_notification(
        context: dg.SensorEvaluationContext, notifier: Notifier, storage: StorageResource
    ):
        """Observe every change of freshness state; notify when an asset fails its policy."""
        return freshness_tick(context, by_key, notifier, storage, time.time())

    return freshness_notification


def freshness_tick(
    context: dg.SensorEvaluationContext,
    by_key: dict[dg.AssetKey, Any],
    notifier: Notifier,
    storage: StorageResource,
    now: float,
) -> dg.SensorResult:
    """One tick at Unix time ``now``: each policy judged on the newest materialisation; an
    observation per change of state, a message per asset that turned ``FAIL``."""
    states = parse_states(context.cursor)
    events, said = [], []
    for key, policy in by_key.items():
        event = context.instance.get_latest_materialization_event(key)
        last = event.timestamp if event is not None else None
        fail = policy.fail_window.to_timedelta().total_seconds()
        warn = policy.warn_window.to_timedelta().total_seconds()
        state, name = freshness_state(last, now, warn, fail), key.to_user_string()
        said.append(f"{name} {state}")
        if state == states.get(name):
            continue
        states[name] = state
        age = None if last is None else round((now - last) / DAY, 2)
        metadata = {"freshness_state": state, "fail_after_days": fail / DAY}
        events.append(dg.AssetObservation(asset_key=key, metadata={**metadata, "age_days": age}))
        if state == FAIL and event is not None:
            version = _version(event)
            reason = f"{name} last materialised {age:g} days ago (fail after {fail / DAY:g})"
            link = f"{notifier.ui_url.rstrip('/')}/assets/{'/'.join(key.path)}"
            message = Message(NOT_FRESH, version, reason, link)
            told = deliver(notifier, storage, message, f"fresh-{name}-{last}")
            said.append(f"not_fresh {told}")
    return dg.SensorResult(
        skip_reason=dg.SkipReason("; ".join(said)), asset_events=events, cursor=json.dumps(states)
    )


def _version(event: dg.EventLogEntry) -> str:
    """The model version the materialisation names (the champion's), else n/a."""
    materialization = event.asset_materialization
    metadata = materialization.metadata if materialization else {}
    for key in ("champion_version", "candidate_version", "data_version"):
        if key in metadata:
            return str(getattr(metadata[key], "value", metadata[key]))
    return "n/a"
