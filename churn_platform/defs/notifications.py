"""Sensors that tell people: a production rollback (one sensor per model) and a failed
blocking check (one for the platform: it watches every run).

The third notification, a drift episode, is sent by ``psi_drift_sensor`` itself when it
requests the retraining. Messages go through the ``notifier`` resource
(``churn_platform.resources.notify``). A channel that cannot be reached fails the tick, so
Dagster evaluates the same event again on the next one instead of losing it.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_platform.config import ModelConfig
from churn_platform.defs.common import asset_key
from churn_platform.resources.notify import BLOCKING_CHECK_FAILED, ROLLBACK, Notifier

PRODUCTION = "production_deployment"
ROLLBACK_OUTCOMES = ("rolled_back", "aborted")


def _values(metadata: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in (metadata or {}).items()}


def build_rollback_notification(model: ModelConfig) -> dg.SensorDefinition:
    """``model``'s rollback notification: one message per rolled-back release of its own."""

    @dg.asset_sensor(
        asset_key=asset_key(model, PRODUCTION),
        name=model.named("rollback_notification"),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One message per production_deployment materialisation whose canary rolled "
        "back (metadata outcome rolled_back or aborted): candidate version, reason, run link.",
    )
    def rollback_notification(
        context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, notifier: Notifier
    ):
        """Notify when a production release ended with the champion still serving."""
        return _notify_rollback(asset_event, notifier)

    return rollback_notification


def _notify_rollback(asset_event: dg.EventLogEntry, notifier: Notifier) -> dg.SkipReason:
    materialization = asset_event.asset_materialization
    meta = _values(materialization.metadata if materialization else {})
    outcome = str(meta.get("outcome", ""))
    if outcome not in ROLLBACK_OUTCOMES:
        return dg.SkipReason(f"production_deployment outcome {outcome or 'none'}: no rollback")
    version = str(meta.get("candidate_version", "n/a"))
    reason = f"{outcome}: {meta.get('reason', 'no reason recorded')}"
    notifier.notify(ROLLBACK, version, reason, notifier.run_url(asset_event.run_id))
    return dg.SkipReason(f"notified: v{version} {outcome}")


def failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    """The run's failed blocking check evaluations (``AssetCheckEvaluation``s)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    evaluations = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in records
        if r.event_log_entry.dagster_event is not None
    ]
    return [
        e
        for e in evaluations
        if isinstance(e, dg.AssetCheckEvaluation) and not e.passed and e.blocking
    ]


def _failure_version(context: dg.RunFailureSensorContext, checks: list[Any]) -> str:
    """The model version the failure names (challenger_model's dg.Failure metadata), else
    one a check names, else the snapshot's data version."""
    for event in context.get_step_failure_events():
        user = event.step_failure_data.user_failure_data if event.step_failure_data else None
        version = _values(user.metadata if user else {}).get("model_version")
        if version:
            return str(version)
    for check in checks:
        meta = _values(check.metadata)
        for key in ("model_version", "candidate_version", "data_version"):
            if meta.get(key):
                return str(meta[key])
    return "n/a"


@dg.run_failure_sensor(
    name="blocking_check_notification",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One message per run that failed on a blocking asset check (data contract, "
    "model checks, staging checks): version, the failed checks, run link.",
)
def blocking_check_notification(context: dg.RunFailureSensorContext, notifier: Notifier):
    """Notify when a run stopped because a blocking check failed (other failures are the
    run's own page)."""
    run_id = context.dagster_run.run_id
    checks = failed_blocking_checks(context.instance, run_id)
    if not checks:
        return
    reason = "; ".join(
        f"{c.asset_key.to_user_string()}.{c.check_name} failed"
        + (f" ({c.description})" if c.description else "")
        for c in checks
    )
    notifier.notify(
        BLOCKING_CHECK_FAILED,
        _failure_version(context, checks),
        reason,
        notifier.run_url(run_id),
    )
