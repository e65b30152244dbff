"""A killed run does not block later runs; a run waiting for a pool slot says so and stops on Ctrl-C.

Real processes against a real SQLite instance configured by deploy/local/dagster.yaml: a tiny job
whose one asset sits in the deployment pool runs through ``churn_platform.runs.execute``, the
same path ``python -m churn_platform run`` takes. The step holds its slot until a file appears,
so the tests wait on conditions (the slot claimed in the instance, a line printed), not sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from churn_platform import runs
from churn_platform.defs.deployment import DEPLOYMENT_POOL

REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 120  # generous: a loaded 2-core machine; the waits end on conditions
POOLED_JOB = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import dagster as dg
    from churn_platform import runs

    @dg.asset(pool=sys.argv[2])
    def deployment_step():
        # holds the pool slot until the test lets it go
        while not Path(sys.argv[3]).exists():
            time.sleep(0.05)

    job = dg.Definitions(
        assets=[deployment_step], jobs=[dg.define_asset_job("pooled", "*")]
    ).resolve_job_def("pooled")
    with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
        for repair in runs.repair_dead_runs(instance):
            print(f"repaired: {repair}", flush=True)
        try:
            result = runs.execute(job, instance)
        except runs.Interrupted as stopped:
            print(f"interrupted: {stopped}", flush=True)
            runs.exit_now(130, instance)
        print(f"run {result.run_id}: {'SUCCESS' if result.success else 'FAILED'}", flush=True)
        sys.exit(0 if result.success else 1)
    """
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copy(REPO / "deploy/local/dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)):  # create the storage before any process
        pass
    return tmp_path


@pytest.fixture
def started() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(home: Path, release: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", POOLED_JOB, str(home), DEPLOYMENT_POOL, str(release)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def wait_until(condition: Callable[[], object], what: str, proc: subprocess.Popen[str]) -> object:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.1)


def slot_holders(home: Path) -> set[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        if DEPLOYMENT_POOL not in storage.get_concurrency_keys():
            return set()
        return storage.get_concurrency_info(DEPLOYMENT_POOL).active_run_ids


def run_ids(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [run.run_id for run in instance.get_runs()]


def read_line_with(proc: subprocess.Popen[str], text: str) -> str:
    """Read ``proc``'s output until a line containing ``text`` (the read blocks, no polling)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"the process ended without printing {text!r}:\n{''.join(seen)}")


def test_a_run_killed_while_holding_the_slot_is_marked_failed_and_the_next_run_completes(
    home: Path, tmp_path: Path, started
):
    first = started(home, tmp_path / "never")
    holders = wait_until(lambda: slot_holders(home), "the first run holds the slot", first)
    (dead_run,) = holders
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(dead_run)
        assert run is not None and run.status == dg.DagsterRunStatus.STARTED  # the stuck state

    release = tmp_path / "go"
    release.touch()
    second = started(home, release)
    out, _ = second.communicate(timeout=DEADLINE_S)
    assert second.returncode == 0, out
    assert f"repaired: run {dead_run} (pooled): its process is gone, marked failed" in out, out
    assert f"freed its slot in {DEPLOYMENT_POOL}/deployment_step" in out, out
    assert "SUCCESS" in out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(dead_run)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(
            dead_run, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        assert "is gone" in (failure[-1].event_log_entry.dagster_event.message or "")
    assert slot_holders(home) == set()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_a_run_waiting_for_the_slot_within_5_s(
    home: Path, tmp_path: Path, started, sig: signal.Signals
):
    release = tmp_path / "go"
    holder = started(home, release)
    wait_until(lambda: slot_holders(home), "the first run holds the slot", holder)
    (holding_run,) = slot_holders(home)

    waiter = started(home, release)
    line = read_line_with(waiter, "waiting for a slot")
    assert f"pool {DEPLOYMENT_POOL} (limit 1)" in line and f"run {holding_run} (pooled" in line
    (waiting_run,) = set(run_ids(home)) - {holding_run}

    waiter.send_signal(sig)
    sent = time.monotonic()
    out, _ = waiter.communicate(timeout=30)
    assert time.monotonic() - sent < 5, out
    assert waiter.returncode == 130, out
    assert f"interrupted: run {waiting_run} canceled by Ctrl-C/SIGTERM while waiting" in out
    assert "Traceback" not in out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(waiting_run)
        assert run is not None and run.status == dg.DagsterRunStatus.CANCELED
        info = instance.event_log_storage.get_concurrency_info(DEPLOYMENT_POOL)
        assert waiting_run not in {step.run_id for step in info.pending_steps}

    release.touch()  # the holder was never disturbed
    out, _ = holder.communicate(timeout=DEADLINE_S)
    assert holder.returncode == 0, out


class _Interrupt(BaseException):
    """Stands for DagsterExecutionInterruptedError (a BaseException too)."""


def _interrupt_a_claim_loop(raise_it: Callable[[int], None]) -> tuple[int, bool]:
    """A thread that loops like Dagster's waiting run: a database call (pure Python work, with
    a handler that sees any exception landing inside it, as SQLAlchemy's does), then a short
    sleep in a function named like Dagster's. ``raise_it`` interrupts it while it is inside
    the call; returns how often the interrupt landed inside the call (0 or 1) and whether the
    thread stopped."""
    landed_in_call: list[BaseException] = []
    stopped = threading.Event()
    in_call = threading.Event()

    def database_call() -> None:
        try:
            in_call.set()
            total = 0
            for i in range(2_000_000):
                total += i
        except BaseException as exc:
            landed_in_call.append(exc)
            raise

    def sleep_til_ready() -> None:  # the name of Dagster's claim sleep
        time.sleep(0.001)

    def loop() -> None:
        try:
            while True:
                database_call()
                sleep_til_ready()
        except _Interrupt:
            stopped.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    in_call.wait()  # the thread is busy inside the call now
    assert thread.ident is not None
    raise_it(thread.ident)
    thread.join()
    return len(landed_in_call), stopped.is_set()


def test_the_interrupt_lands_in_the_claim_sleep_not_inside_a_database_call():
    """Ctrl-C while waiting for a slot is raised in the waiting thread where Dagster sleeps
    between claim tries, never inside a SQLAlchemy/SQLite call (whose handler printed
    "Exception closing connection" and a traceback once, under load)."""
    tries = 20
    aimed = [
        _interrupt_a_claim_loop(lambda t: runs._raise_when_waiting(t, _Interrupt))
        for _ in range(tries)
    ]
    assert aimed == [(0, True)] * tries
    # the control: raised at once, the same interrupt lands inside the call
    blind = [
        _interrupt_a_claim_loop(lambda t: runs._raise_in_thread(t, _Interrupt)) for _ in range(3)
    ]
    assert all(stopped for _, stopped in blind)
    assert sum(landed for landed, _ in blind) > 0


def test_a_live_run_and_runs_of_other_tools_are_left_alone(home: Path):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        mine = instance.create_run_for_job(
            dg.GraphDefinition("g").to_job(), tags=runs.process_tags()
        )
        other = instance.create_run_for_job(dg.GraphDefinition("h").to_job())
        for run in (mine, other):
            instance.handle_run_event(
                run.run_id,
                dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
            )
        assert runs.repair_dead_runs(instance) == []
        assert {r.status for r in instance.get_runs()} == {dg.DagsterRunStatus.STARTED}


def test_a_reused_pid_does_not_pass_for_the_original_process():
    tags = runs.process_tags()
    assert not runs.process_is_gone(tags)
    if tags[runs.PROCESS_START_TAG]:  # Linux: the start time tells the two apart
        assert runs.process_is_gone({**tags, runs.PROCESS_START_TAG: "1"})
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert runs.process_is_gone({**tags, runs.PID_TAG: str(gone.pid)})
    assert not runs.process_is_gone({**tags, runs.HOST_TAG: "another-host"})
    assert os.getpid() == int(tags[runs.PID_TAG])


def _seed_run_holding_the_slot(dagster_home: Path, tags: dict[str, str]) -> str:
    """A run of ``churn_release`` recorded as started by the process ``tags`` name, holding the
    deployment pool's slot (what a release in the middle of its canary looks like)."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("churn_release").to_job(), tags=tags)
        instance.handle_run_event(
            run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name)
        )
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(DEPLOYMENT_POOL)
        claim = storage.claim_concurrency_slot(DEPLOYMENT_POOL, run.run_id, "production_deployment")
        assert claim.is_claimed and storage.get_concurrency_info(DEPLOYMENT_POOL).limit == 1
        return run.run_id


def _new_churn_home(tmp_path: Path) -> tuple[Path, Path]:
    churn_home = tmp_path / "churn_home"
    dagster_home = churn_home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "deploy/local/dagster.yaml", dagster_home / "dagster.yaml")
    return churn_home, dagster_home


def test_the_run_command_repairs_a_dead_run_before_it_starts(tmp_path: Path):
    """`python -m churn_platform run` itself: a dead run's slot no longer blocks the release."""
    churn_home, dagster_home = _new_churn_home(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_run = _seed_run_holding_the_slot(
        dagster_home,
        {**runs.process_tags(), runs.PID_TAG: str(gone.pid)},
    )

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "DAGSTER_"))}
    out = subprocess.run(
        [sys.executable, "-m", "churn_platform", "run", "--job", "churn_release"],
        cwd=REPO,
        env={**clean, "CHURN_HOME": str(churn_home)},
        capture_output=True,
        text=True,
        timeout=300,  # without the repair the release would wait for the slot forever
    )
    assert (
        f"repaired: run {dead_run} (churn_release): its process is gone, marked failed, "
        f"freed its slot in {DEPLOYMENT_POOL}/production_deployment"
    ) in out.stdout, out.stdout + out.stderr
    # the release got the slot and ran its step (it fails: nothing was staged in this home)
    assert "failed: production_deployment" in out.stdout, out.stdout + out.stderr


def test_the_run_command_waiting_for_a_live_release_says_so_and_stops_on_ctrl_c(tmp_path: Path):
    churn_home, dagster_home = _new_churn_home(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        tags = {
            **runs.process_tags(),
            runs.PID_TAG: str(live.pid),
            runs.PROCESS_START_TAG: runs.process_start(live.pid),
        }
        holder = _seed_run_holding_the_slot(dagster_home, tags)
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "DAGSTER_"))}
        cli = subprocess.Popen(
            [sys.executable, "-m", "churn_platform", "run", "--job", "churn_release"],
            cwd=REPO,
            env={**clean, "CHURN_HOME": str(churn_home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = read_line_with(cli, "waiting for a slot")
            assert f"pool {DEPLOYMENT_POOL} (limit 1) for step production_deployment" in line
            assert f"held by run {holder} (churn_release, STARTED" in line
            cli.send_signal(signal.SIGINT)
            sent = time.monotonic()
            out, err = cli.communicate(timeout=30)
            assert time.monotonic() - sent < 5, out + err
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 130, out + err
        assert "canceled by Ctrl-C/SIGTERM while waiting for a slot in pool churn_deployment" in err
        assert "repaired" not in out  # the holder's process is alive: it is left alone
    finally:
        live.kill()
        live.wait()
