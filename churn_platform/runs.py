"""Runs of the local Dagster instance: dead runs repaired, a wait for a pool slot made visible.

``python -m churn_platform run`` executes jobs in its own process (``execute_in_process``), so
no run launcher or daemon watches it. When that process dies (``kill -9``, a reboot) the run
stays STARTED and any concurrency-pool slot it held stays claimed: every later run that needs
the pool (both deployment assets share ``churn_deployment``, limit 1) would wait forever.

- Every run started here is tagged with the process that runs it (pid, host, process start
  time), so a later command can tell, without guessing, that the process is gone.
- :func:`repair_dead_runs` marks such runs failed, saying why, and frees their slots (and the
  slots of any other finished run that still holds one).
- :func:`execute` runs a job with a watcher thread that prints, every few seconds, which pool
  the run waits for and which run holds it; Ctrl-C (or SIGTERM, which Dagster maps onto it)
  then cancels the run within a second. Another thread prints one line per step as it starts
  and ends, with its duration, read from the run's events in the instance.
- :func:`exclusive_step` makes a limit-1 pool exclusive across processes on a SQLite instance,
  where Dagster's own slot claim is not atomic (two runs can both get the one slot);
  :func:`unless_held` takes it only when free (the serving watchdog yields to a deployment).
- :func:`quiet_warnings` keeps Dagster's beta/preview warnings and MLflow's schema hints off
  the terminal (they speak to the platform's developers, not to whoever runs a job).
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import gc
import json
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg

from churn_platform import dagster_private

PID_TAG = "churn/pid"
HOST_TAG = "churn/host"
PROCESS_START_TAG = "churn/process_start"  # tells a reused pid from the original process
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
WAIT_MESSAGE_EVERY_S = 5.0
_POLL_S = 0.5


def process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else ``""``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses: count from the last ")"
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming the current process as the one that runs a run."""
    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        HOST_TAG: socket.gethostname(),
        PROCESS_START_TAG: process_start(pid),
    }


def process_is_gone(tags: Mapping[str, str]) -> bool:
    """True when the tagged process certainly no longer exists; False when alive or unknown.

    Unknown: a run without our tags (started by the UI, a daemon or another tool) or started
    on another host; those are left to Dagster's run monitoring.
    """
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return False
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        pass
    recorded = tags.get(PROCESS_START_TAG, "")
    return bool(recorded) and process_start(pid) not in ("", recorded)


@dataclass(frozen=True)
class Repair:
    """A run found with its process gone, or a finished run that still held pool slots."""

    run_id: str
    job_name: str
    marked_failed: bool
    freed: tuple[str, ...] = field(default=())  # "pool/step" of the slots freed

    def __str__(self) -> str:
        # a slot claimed twice (SQLite's non-atomic claim) is still one slot to the reader
        freed = list(dict.fromkeys(self.freed))
        slots = f", freed its slot in {', '.join(freed)}" if freed else ""
        if self.marked_failed:
            return f"run {self.run_id} ({self.job_name}): its process is gone, marked failed{slots}"
        return f"run {self.run_id} ({self.job_name}) had finished{slots}"


def _slots_by_run(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """Run id -> "pool/step" of every claimed slot and pending claim in the instance."""
    held: dict[str, list[str]] = {}
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return held
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        for slot in info.claimed_slots:
            held.setdefault(slot.run_id, []).append(f"{pool}/{slot.step_key}")
        for step in info.pending_steps:
            held.setdefault(step.run_id, []).append(f"{pool}/{step.step_key} (pending)")
    return held


def repair_dead_runs(instance: dg.DagsterInstance) -> list[Repair]:
    """Mark failed the unfinished runs whose process is gone; free slots held by finished runs.

    Safe while other runs are live: a run is only touched when its own process is provably
    gone (see :func:`process_is_gone`) or when Dagster already records it as finished.
    """
    held = _slots_by_run(instance)
    repairs = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        if not process_is_gone(run.tags):
            continue
        instance.report_run_failed(
            run,
            message=(
                f"The process that ran this run (pid {run.tags[PID_TAG]} on "
                f"{run.tags[HOST_TAG]}) is gone: killed or the machine restarted. Marked failed "
                "by the next `python -m churn_platform run`, which freed its pool slots."
            ),
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        repairs.append(Repair(run.run_id, run.job_name, True, tuple(held.pop(run.run_id, []))))
    for run_id, slots in held.items():
        holder = instance.get_run_by_id(run_id)
        if holder is None or holder.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            repairs.append(Repair(run_id, holder.job_name if holder else "?", False, tuple(slots)))
    return repairs


@dataclass(frozen=True)
class SlotWait:
    """One step of a run waiting for a pool slot, and who holds the pool."""

    pool: str
    step_key: str
    limit: int | None
    holders: tuple[str, ...]  # "run <id> (<job>, <status>, step <step>)"

    def __str__(self) -> str:
        held = "; ".join(self.holders) or "nobody (the slot is being handed over)"
        return (
            f"waiting for a slot in pool {self.pool} (limit {self.limit}) for step "
            f"{self.step_key}, held by {held}"
        )


def slot_waits(instance: dg.DagsterInstance, run_id: str) -> list[SlotWait]:
    """The steps of ``run_id`` waiting for a pool slot now (empty when it waits for none)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    waits = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        mine = [
            step
            for step in info.pending_steps
            if step.run_id == run_id and step.assigned_timestamp is None
        ]
        if not mine:
            continue
        holders = []
        for slot in info.claimed_slots:
            holder = instance.get_run_by_id(slot.run_id)
            what = f"{holder.job_name}, {holder.status.value}" if holder else "unknown run"
            holders.append(f"run {slot.run_id} ({what}, step {slot.step_key})")
        waits += [SlotWait(pool, step.step_key, info.limit, tuple(holders)) for step in mine]
    return waits


def pool_lock_path(instance: dg.DagsterInstance, pool: str) -> Path:
    """The file :func:`exclusive_step` locks for ``pool`` on a SQLite instance."""
    return Path(instance.storage_directory()) / "pools" / f"{pool}.lock"


@contextmanager
def exclusive_step(
    instance: dg.DagsterInstance,
    pool: str,
    holder: Mapping[str, str],
    log: Callable[[str], None],
    *,
    poll_s: float = 0.2,
) -> Iterator[None]:
    """Hold ``pool`` alone, across processes, for the body: a limit-1 pool made exact.

    Dagster's SQLite storage claims a pool slot by reading a free slot and then writing it,
    outside one transaction, so two runs whose steps claim the last slot at the same
    instant can both get it (measured with Dagster 1.13.27: two processes claiming one free
    slot together both got it 6 times in 15). On a SQLite instance the step
    therefore also takes an exclusive ``flock`` on ``<DAGSTER_HOME>/storage/pools/<pool>.lock``.
    The kernel drops the lock when the process dies, so a killed run leaves nothing held.
    While another process holds it, ``log`` hears every few seconds who (``holder`` as that
    process wrote it). PostgreSQL and MySQL storages claim with ``SELECT ... FOR UPDATE``;
    there (and on an in-memory instance, one process) this is a no-op.
    """
    if not dagster_private.is_sqlite_instance(instance):
        yield
        return
    path = pool_lock_path(instance, pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as lock:
        waited_since: float | None = None
        last_message = 0.0
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                waited_since = waited_since or now
                if now - last_message >= WAIT_MESSAGE_EVERY_S:
                    last_message = now
                    lock.seek(0)
                    held_by = lock.read().strip() or "another process"
                    log(
                        f"waiting for pool {pool}, held by {held_by} "
                        f"({now - waited_since:.0f} s so far)"
                    )
                time.sleep(poll_s)  # an interruptible wait: run termination still lands
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(json.dumps({**holder, "pid": str(os.getpid())}))
            lock.flush()
            yield
        finally:
            with suppress(OSError):
                lock.seek(0)
                lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def unless_held(
    instance: dg.DagsterInstance, pool: str, holder: Mapping[str, str]
) -> Iterator[str | None]:
    """Hold ``pool`` for the body if nobody does, yielding None; else yield who holds it
    (and hold nothing): the watchdog's way not to fight a deployment step.

    On a SQLite instance the holder is the process holding :func:`exclusive_step`'s lock (the
    kernel drops it the moment that process dies, so a killed release holds nothing). On
    other storages, where the step takes no lock, an unfinished run that claimed a slot of
    ``pool`` holds it (until run monitoring marks a dead one failed)."""
    if not dagster_private.is_sqlite_instance(instance):
        yield slot_holder(instance, pool)
        return
    path = pool_lock_path(instance, pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            yield lock.read().strip() or "another process"
            return
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(json.dumps({**holder, "pid": str(os.getpid())}))
            lock.flush()
            yield None
        finally:
            with suppress(OSError):
                lock.seek(0)
                lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


def slot_holder(instance: dg.DagsterInstance, pool: str) -> str | None:
    """The unfinished run holding a claimed slot of ``pool`` (its process not known gone)."""
    for run_id, entries in _slots_by_run(instance).items():
        slots = [e for e in entries if e.startswith(f"{pool}/") and not e.endswith("(pending)")]
        run = instance.get_run_by_id(run_id) if slots else None
        if run is not None and run.status in UNFINISHED and not process_is_gone(run.tags):
            return f"run {run_id} ({run.job_name}, {', '.join(slots)})"
    return None


STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
}


class StepProgress:
    """Turns a run's step events into lines: ``step X started``, ``step X succeeded in 1.2 s``."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, out: Callable[[str], None]):
        self.instance, self.run_id, self.out = instance, run_id, out
        self.cursor: str | None = None
        self.started: dict[str, float] = {}

    def poll(self) -> None:
        """Print the lines of every step event since the last poll."""
        while True:
            page = self.instance.get_records_for_run(
                self.run_id, cursor=self.cursor, of_type=STEP_EVENTS, limit=100
            )
            for record in page.records:
                self._line(record.event_log_entry)
            self.cursor = page.cursor
            if not page.has_more:
                return

    def _line(self, entry: Any) -> None:
        event, step, at = entry.dagster_event, entry.step_key or "?", entry.timestamp
        if event is None:
            return
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            self.started[step] = at
            self.out(f"  step {step} started")
            return
        if kind == dg.DagsterEventType.STEP_SKIPPED:
            self.out(f"  step {step} skipped (an upstream step failed or a check blocked it)")
            return
        took = f"{at - self.started[step]:.1f} s" if step in self.started else "?"
        if kind == dg.DagsterEventType.STEP_SUCCESS:
            self.out(f"  step {step} succeeded in {took}")
        else:
            self.out(f"  step {step} FAILED after {took}")


@contextmanager
def _progress(
    instance: dg.DagsterInstance, run_id: str, out: Callable[[str], None]
) -> Iterator[None]:
    """While the body runs: a line per step start and end; the last ones after it ends."""
    progress = StepProgress(instance, run_id, out)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(_POLL_S):
            try:
                progress.poll()
            except Exception:  # noqa: BLE001 - a busy SQLite must not kill the watcher
                continue

    thread = threading.Thread(target=watch, name="step-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        progress.poll()


def quiet_warnings() -> None:
    """Hide Dagster's beta/preview warnings and MLflow's integer-schema hint in this process."""
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped a run while it waited for a pool slot; the run is canceled."""


def _raise_in_thread(thread_id: int, error: type[BaseException]) -> None:
    """Raise ``error`` in another Python thread at its next bytecode."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))


def _raise_when_waiting(
    thread_id: int,
    error: type[BaseException],
    *,
    waiting_in: str = dagster_private.CLAIM_SLEEP,
    tries: int = 400,
    pause_s: float = 0.005,
) -> None:
    """Raise ``error`` in thread ``thread_id`` once its innermost frame is ``waiting_in``.

    The waiting thread spends most of its time asleep there, but between two sleeps it runs
    the claim: SQLAlchemy and SQLite calls, whose own handlers would log an interrupt landing
    inside them as "Exception closing connection" with a traceback (seen under load). Raised
    while the thread sleeps in ``waiting_in``, the error is delivered as the sleep returns, in
    Dagster's loop, which releases the pending claim and records the run as canceled. After
    ``tries`` looks without finding it there (Dagster moved the function), it is raised anyway.
    """
    for _ in range(tries):
        frame = sys._current_frames().get(thread_id)
        if frame is None:  # the thread is gone: nothing to interrupt
            return
        if frame.f_code.co_name == waiting_in:
            break
        time.sleep(pause_s)
    _raise_in_thread(thread_id, error)


@contextmanager
def _slot_wait_watcher(
    instance: dg.DagsterInstance,
    run_id: str,
    out: Callable[[str], None],
    interrupted: list[str],
) -> Iterator[None]:
    """While the body runs: report this run's waits for a slot; on Ctrl-C, cancel the run."""
    main = threading.get_ident()
    stop = threading.Event()

    def watch() -> None:
        last_message = 0.0
        waiting_since: float | None = None
        while not stop.wait(_POLL_S):
            try:
                waits = slot_waits(instance, run_id)
            except Exception:  # noqa: BLE001 - a busy SQLite must not kill the watcher
                continue
            if not waits:
                waiting_since = None
                continue
            now = time.monotonic()
            waiting_since = waiting_since or now
            if dagster_private.interrupt_captured():
                interrupted[:] = [str(wait) for wait in waits]
                run = instance.get_run_by_id(run_id)
                if run is not None:
                    instance.report_run_canceling(
                        run, message="Ctrl-C/SIGTERM while " + str(waits[0])
                    )
                _raise_when_waiting(main, dg.DagsterExecutionInterruptedError)
                return
            if now - last_message >= WAIT_MESSAGE_EVERY_S:
                last_message = now
                for wait in waits:
                    out(f"{wait} ({now - waiting_since:.0f} s so far; Ctrl-C cancels this run)")

    thread = threading.Thread(target=watch, name="slot-wait-watcher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# Between these events the run holds no big temporaries: the last step's values are gone
# (step start), the Parquet reading buffers are (input loaded), the encoded output is (output
# handled). Freed memory is handed back to the system there, so one step's peak does not
# become the floor of the next.
_RELEASE_AFTER = frozenset({"STEP_START", "LOADED_INPUT", "HANDLED_OUTPUT", "STEP_SUCCESS"})


def _release_after(event: dg.DagsterEvent) -> None:
    if event.event_type_value in _RELEASE_AFTER:
        release_memory()


def release_memory() -> None:
    """Collect garbage, then hand freed memory back to the system: Arrow's pool (mimalloc
    keeps what Parquet reading freed) and glibc's heap (``malloc_trim``).

    pandas and Arrow free 10M-row frames in many medium blocks that the allocators keep;
    without this the process keeps the high-water mark of every step it ran (measured: a
    10M-row Parquet snapshot read and dropped left 1.3 GB resident, 0.16 GB after release).
    """
    gc.collect()
    if "pyarrow" in sys.modules:  # never import it just for this
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RecordOutputs(dict):
    """An output capture that keeps the records a caller reads back (the evaluation report,
    the release) but not row data. ``execute_in_process`` keeps every step's output alive
    until the run ends; at 10M rows the snapshot, the validated frame and the holdout held
    that way are gigabytes the later steps cannot use. The values are stored by the IO
    manager either way."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if not _holds_rows(value):
            super().__setitem__(key, value)


def _holds_rows(value: Any) -> bool:
    """Whether ``value`` is a DataFrame or a dataclass carrying one (``MappedFrame``)."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return True
    return dataclasses.is_dataclass(value) and any(
        isinstance(getattr(value, f.name, None), pd.DataFrame) for f in dataclasses.fields(value)
    )


def execute(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    out: Callable[[str], None] = lambda line: print(line, flush=True),
    tags: Mapping[str, str] | None = None,
    progress: bool = True,
) -> dg.ExecuteInProcessResult:
    """Run ``job`` in this process on ``instance``, tagged with this process (and ``tags``,
    e.g. what triggered it), watching slots and (``progress``) printing a line per step start
    and end.

    Raises :class:`Interrupted` when Ctrl-C stopped the run while it waited for a slot.
    """
    run_id = str(uuid.uuid4())
    interrupted: list[str] = []
    steps = _progress(instance, run_id, out) if progress else nullcontext()
    with steps, _slot_wait_watcher(instance, run_id, out, interrupted):
        try:
            result = dagster_private.execute_in_process(
                job,
                instance,
                dict(run_config or {}),
                run_id,
                {**(tags or {}), **process_tags()},
                output_capture=_RecordOutputs(),
                on_event=_release_after,
            )
        except dg.DagsterExecutionInterruptedError:
            if not interrupted:
                raise
            result = None
    if interrupted:
        raise Interrupted(f"run {run_id} canceled by Ctrl-C/SIGTERM while {interrupted[0]}")
    assert result is not None
    return result


def exit_now(code: int, instance: dg.DagsterInstance) -> NoReturn:
    """Close ``instance`` and leave the process at once, after Ctrl-C stopped a waiting run.

    The run is already recorded canceled and its pending claim released; what remains is the
    interpreter's own shutdown, which after importing Dagster takes seconds on a loaded machine
    (measured: 5-7 s on two busy cores), too long for "stops within 5 s".
    """
    instance.dispose()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
