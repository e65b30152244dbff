"""Sensors that tell people: a production rollback (one sensor per model), a failed run
(one for the platform: it watches every run; a failed blocking check is named as such), an
error in any of the platform's sensors (``guarded``), and the outbox that retries what a
channel refused.

A drift episode is told by ``psi_drift_sensor`` itself when it requests the retraining, a
stale asset by ``freshness_notification`` (``defs/freshness.py``). Messages go through the
``notifier`` resource (``churn_platform.resources.notify``) by ``deliver``: a channel that
cannot be reached leaves the message pending in the storage, and ``notification_outbox``
sends it again on its next tick (Dagster's run-failure sensor moves its cursor past a run
whose tick raised, so failing the tick would lose the message).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from churn_platform.config import ModelConfig
from churn_platform.defs.common import asset_key
from churn_platform.resources.notify import (
    BLOCKING_CHECK_FAILED,
    ROLLBACK,
    RUN_FAILED,
    SENSOR_ERROR,
    Message,
    Notifier,
    deliver,
    retry_pending,
)
from churn_platform.resources.storage import StorageResource

T = TypeVar("T")
SENSOR_ERRORS = "notifications/sensor_errors"

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
        context: dg.SensorEvaluationContext,
        asset_event: dg.EventLogEntry,
        notifier: Notifier,
        storage: StorageResource,
    ):
        """Notify when a production release ended with the champion still serving."""
        return _notify_rollback(asset_event, notifier, storage)

    return rollback_notification


def _notify_rollback(
    asset_event: dg.EventLogEntry, notifier: Notifier, storage: StorageResource
) -> dg.SkipReason:
    materialization = asset_event.asset_materialization
    meta = _values(materialization.metadata if materialization else {})
    outcome = str(meta.get("outcome", ""))
    if outcome not in ROLLBACK_OUTCOMES:
        return dg.SkipReason(f"production_deployment outcome {outcome or 'none'}: no rollback")
    version = str(meta.get("candidate_version", "n/a"))
    reason = f"{outcome}: {meta.get('reason', 'no reason recorded')}"
    message = Message(ROLLBACK, version, reason, notifier.run_url(asset_event.run_id))
    told = deliver(notifier, storage, message, f"{ROLLBACK}-{asset_event.run_id}")
    return dg.SkipReason(f"v{version} {outcome}: {told}")


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


def _step_errors(context: dg.RunFailureSensorContext) -> str:
    """The failed steps and their errors' first lines; else the run's failure message (a run
    that crashed, or was marked failed by run monitoring, has no step failure)."""
    failures = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None and error.cause is not None:  # Dagster's wrapper, then the cause
            error = error.cause
        first = (error.message.strip().splitlines() or [""])[0] if error else ""
        failures.append(f"{event.step_key}: {first or 'failed'}")
    return "; ".join(failures) or (context.failure_event.message or "the run failed")


def failure_message(context: dg.RunFailureSensorContext, notifier: Notifier) -> Message:
    """The run's message: its failed blocking checks when one stopped it, else its errors."""
    run_id = context.dagster_run.run_id
    checks = failed_blocking_checks(context.instance, run_id)
    if not checks:
        job = context.dagster_run.job_name
        return Message(
            RUN_FAILED,
            _failure_version(context, []),
            f"{job}: {_step_errors(context)}",
            notifier.run_url(run_id),
        )
    reason = "; ".join(
        f"{c.asset_key.to_user_string()}.{c.check_name} failed"
        + (f" ({c.description})" if c.description else "")
        for c in checks
    )
    return Message(
        BLOCKING_CHECK_FAILED, _failure_version(context, checks), reason, notifier.run_url(run_id)
    )


@dg.run_failure_sensor(
    name="run_failure_notification",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One message per failed run of the platform: the failed blocking checks "
    "(data contract, model checks, staging checks) when one stopped it, else the failed steps "
    "and their errors (a source that cannot be read, a crash); version, reason, run link. A "
    "message a channel refuses waits for notification_outbox.",
)
def run_failure_notification(
    context: dg.RunFailureSensorContext, notifier: Notifier, storage: StorageResource
):
    """Notify once per failed run (Dagster calls this once per run; the outbox retries)."""
    message = failure_message(context, notifier)
    told = deliver(notifier, storage, message, f"run-{context.dagster_run.run_id}")
    return dg.SkipReason(f"run {context.dagster_run.run_id}: {told}")


@dg.sensor(
    name="notification_outbox",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends again every notification a channel refused (kept in the storage under "
    "notifications/pending/) until it arrives; a delivered one is removed.",
)
def notification_outbox(
    context: dg.SensorEvaluationContext, notifier: Notifier, storage: StorageResource
):
    """Retry the pending notifications; the tick fails (and shows red) while one is refused."""
    delivered, errors = retry_pending(notifier, storage)
    if errors:
        raise RuntimeError(f"{len(errors)} notification(s) still pending: " + "; ".join(errors))
    return dg.SkipReason(f"{delivered} pending notification(s) delivered")


def guarded(context: dg.SensorEvaluationContext, name: str, tick: Callable[[], T]) -> T:
    """Run a sensor's tick; when it raises, tell people once per distinct error (kept in the
    storage until a tick succeeds again), then raise it so that Dagster shows the failed tick.
    The sensor needs the ``notifier`` and ``storage`` resources."""
    storage: StorageResource = context.resources.storage
    marker = storage.path(f"{SENSOR_ERRORS}/{name}.txt")
    try:
        result = tick()
    except Exception as exc:
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if not marker.exists() or marker.read_text() != error:
            notifier: Notifier = context.resources.notifier
            link = f"{notifier.ui_url.rstrip('/')}/automation"
            deliver(
                notifier,
                storage,
                Message(SENSOR_ERROR, "n/a", f"{name}: {error}", link),
                f"sensor-{name}",
            )
            storage.write_text(f"{SENSOR_ERRORS}/{name}.txt", error)
        raise
    if marker.exists():
        marker.unlink()
    return result
