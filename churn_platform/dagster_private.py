"""The private Dagster APIs the platform uses: imported here, and nowhere else in ``runs``.

Each one was checked on Dagster :data:`CHECKED_ON` (pinned in ``constraints.txt``), and each
says why no public API does its job. ``churn_platform_tests/test_dagster_private.py`` fails
when the installed Dagster is another version or when a name listed in :data:`USED` is gone
or no longer takes the arguments passed to it; re-read the Dagster source named there and
update :data:`CHECKED_ON` once the uses below still hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

CHECKED_ON = "1.13.27"

# Every private name used, "module:qualified name" -> the parameters this module passes it.
USED: dict[str, tuple[str, ...]] = {
    "dagster._core.storage.event_log.sqlite.sqlite_event_log:SqliteEventLogStorage": (),
    "dagster._utils.interrupts:check_captured_interrupt": (),
    "dagster._core.execution.plan.active:ActiveExecution.sleep_til_ready": ("self",),
    "dagster._core.definitions.job_base:InMemoryJob": ("job_def",),
    "dagster._core.execution.api:create_execution_plan": ("job", "run_config", "instance_ref"),
    "dagster._core.execution.api:ExecuteRunWithPlanIterable": (
        "execution_plan",
        "iterator",
        "execution_context_manager",
    ),
    "dagster._core.execution.api:job_execution_iterator": ("job_context", "execution_plan"),
    "dagster._core.execution.context_creation_job:PlanOrchestrationContextManager": (
        "context_event_generator",
        "job",
        "execution_plan",
        "dagster_run",
        "instance",
        "run_config",
        "executor_defs",
        "output_capture",
        "raise_on_error",
    ),
    "dagster._core.execution.context_creation_job:orchestration_context_event_generator": (
        "job",
        "execution_plan",
        "run_config",
        "dagster_run",
        "instance",
        "raise_on_error",
        "executor_defs",
        "output_capture",
    ),
    # public class, undocumented methods: the daemon's stored state of each sensor
    "dagster:DagsterInstance.all_instigator_state": ("self",),
    "dagster:DagsterInstance.update_instigator_state": ("self", "state"),
    "dagster._core.scheduler.instigation:InstigatorState.with_data": ("self", "instigator_data"),
    # public class, undocumented method: what ``JobDefinition.execute_in_process`` runs
    "dagster:JobDefinition.as_ephemeral_job": ("self", "resource_defs", "input_values"),
}

# The function Dagster's in-process executor sleeps in between two tries of a pool claim
# (``ActiveExecution.sleep_til_ready``): the one place where an interrupt raised into the
# waiting thread lands outside SQLAlchemy. A frame's name is all that is compared, so nothing
# is imported for it; the test checks the method still exists.
CLAIM_SLEEP = "sleep_til_ready"


def is_sqlite_instance(instance: dg.DagsterInstance) -> bool:
    """Whether ``instance`` keeps its event log (and so its pools) in SQLite files.

    No public API tells the storage kind; the slot claim this decides about is the SQLite
    storage's own (non-atomic) one, so its class is the exact test.
    """
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    return isinstance(instance.event_log_storage, SqliteEventLogStorage)


def interrupt_captured() -> bool:
    """Whether Ctrl-C/SIGTERM arrived while Dagster held the signal back during a run.

    During a run Dagster replaces the SIGINT handler with one that only records the signal
    and acts on it at its next checkpoint; its loop that waits for a pool slot has none, so
    the watcher reads that record. There is no public accessor.
    """
    from dagster._utils.interrupts import check_captured_interrupt

    return check_captured_interrupt()


def execute_in_process(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any],
    run_id: str,
    tags: Mapping[str, str],
    output_capture: dict[Any, Any],
    on_event: Callable[[dg.DagsterEvent], None],
) -> dg.ExecuteInProcessResult:
    """``job.execute_in_process`` (no selection, no partition, errors not raised) with the
    caller's ``output_capture`` dict and ``on_event`` called as each event happens.

    The public call keeps every step's output in a dict of its own until the run ends and
    returns the events only then; neither can be changed through it. If the internals it
    is rebuilt from move, the public call runs instead (``on_event`` then sees every event
    at the end), which only costs memory.
    """
    try:
        from dagster._core.definitions.job_base import InMemoryJob
        from dagster._core.execution.api import (
            ExecuteRunWithPlanIterable,
            create_execution_plan,
            job_execution_iterator,
        )
        from dagster._core.execution.context_creation_job import (
            PlanOrchestrationContextManager,
            orchestration_context_event_generator,
        )
    except ImportError:
        result = job.execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False, run_id=run_id, tags=tags
        )
        for event in result.all_events:
            on_event(event)
        return result
    wrapped = InMemoryJob(job_def=job.as_ephemeral_job(resource_defs={}, input_values={}))
    job_def = wrapped.get_definition()
    plan = create_execution_plan(
        wrapped,
        run_config=run_config,
        instance_ref=instance.get_ref() if instance.is_persistent else None,
    )
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        # what Dagster's ``merge_run_tags`` gives without a partition key, then its core call
        tags={**job_def.run_tags, **job.run_tags, **tags},
        run_id=run_id,
        execution_plan=plan,
    )
    events = []
    for event in ExecuteRunWithPlanIterable(
        execution_plan=plan,
        iterator=job_execution_iterator,
        execution_context_manager=PlanOrchestrationContextManager(
            context_event_generator=orchestration_context_event_generator,
            job=wrapped,
            execution_plan=plan,
            dagster_run=run,
            instance=instance,
            run_config=run_config,
            executor_defs=None,
            output_capture=output_capture,
            raise_on_error=False,
        ),
    ):
        events.append(event)
        on_event(event)
    finished = instance.get_run_by_id(run_id)
    assert finished is not None
    return dg.ExecuteInProcessResult(
        job_def=job_def, event_list=events, dagster_run=finished, output_capture=output_capture
    )


def _sensor_state(instance: dg.DagsterInstance, name: str) -> Any | None:
    """The daemon's stored state of sensor ``name`` (None: it never ticked on ``instance``)."""
    states = [
        state
        for state in instance.all_instigator_state()
        if state.name == name and state.instigator_type.value == "SENSOR"
    ]
    # one per code location that ever held the sensor: the running one is the daemon's
    states.sort(key=lambda state: not state.is_running)
    return states[0] if states else None


def stored_sensor_cursor(instance: dg.DagsterInstance, name: str) -> tuple[bool, str | None]:
    """Whether the daemon keeps a state for sensor ``name`` on ``instance``, and its cursor.

    The daemon keys that state by the code location's origin, which only a loaded workspace
    knows; the instance lists the states it holds, each with its sensor's name. No public
    API reads a sensor's cursor.
    """
    state = _sensor_state(instance, name)
    if state is None:
        return False, None
    return True, state.instigator_data.cursor


def store_sensor_cursor(instance: dg.DagsterInstance, name: str, cursor: str | None) -> bool:
    """Replace the stored cursor of sensor ``name`` as the daemon does after a tick; False
    when the instance holds no state for it (then only the workspace can create one: the
    public ``dagster sensor cursor --set``)."""
    state = _sensor_state(instance, name)
    if state is None:
        return False
    instance.update_instigator_state(state.with_data(state.instigator_data._replace(cursor=cursor)))
    return True
