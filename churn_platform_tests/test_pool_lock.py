"""The deployment pool is exclusive across processes on a SQLite Dagster instance.

Dagster's SQLite storage claims a pool slot with a read and a write that are not one
transaction: two runs claiming the one slot of ``churn_deployment`` at the same instant can
both get it (seen in CI: two concurrent runs' staging steps interleaved and one retired the
other's candidate). ``runs.exclusive_step`` adds a ``flock`` that the deployment steps hold
for their whole body. These tests hold that lock from outside and watch the real assets wait
for it, by conditions (events in the instance), never by time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_platform import runs
from churn_platform.core import records as r
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources.environments import resources_for_environment
from churn_platform_tests.pipeline import assets

REPO = Path(__file__).resolve().parent.parent
POOL = "churn_deployment"
HOLDER = {"run": "holder-run-of-the-test", "asset": "elsewhere"}


@pytest.fixture
def instance(tmp_path: Path):
    """A SQLite Dagster instance configured like the local one (pool limit 1)."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO / "deploy/local/dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


class _Upstream(dg.IOManager):
    """Hands the deployment asset fixed upstream values; stores nothing."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        return None

    def load_input(self, context: dg.InputContext) -> Any:
        return self.values[context.asset_key.to_user_string()]


def _upstream() -> dict[str, Any]:
    """Upstream values for which each deployment step has nothing to move: the gate kept the
    champion, so staging stays as it is and production has nothing to release."""
    keep = r.EvaluationDecision(
        promote=False,
        reason="the test's gate keeps the champion",
        challenger_version="1",
        challenger_model_uri="models:/churn_model/1",
        champion_version=None,
        holdout_hash="0",
        rule="interval",
    )
    return {
        "evaluation_report": keep,
        "holdout_set": generate(SyntheticSpec(n_rows=50, seed=3)),
        "staging_deployment": r.StagingResult(r.NO_ACTION, reason="the test staged nothing"),
    }


def _run_ids(instance: dg.DagsterInstance) -> list[str]:
    return [run.run_id for run in instance.get_runs()]


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


@pytest.mark.parametrize("asset", ["staging_deployment", "production_deployment"])
def test_a_deployment_step_waits_for_the_pool_lock_another_process_holds(
    churn_home: Path, instance: dg.DagsterInstance, asset: str
):
    results: list[dg.ExecuteInProcessResult] = []
    resources = {**resources_for_environment(), "io_manager": _Upstream(_upstream())}
    holder_waits: list[str] = []
    # held as another run holds it; the step opens the file anew, so the two conflict as two
    # processes would
    with runs.exclusive_step(instance, POOL, HOLDER, holder_waits.append):
        worker = threading.Thread(
            target=lambda: results.append(
                dg.materialize(
                    assets(),
                    selection=[asset],
                    instance=instance,
                    resources=resources,
                    raise_on_error=False,
                )
            ),
            daemon=True,
        )
        worker.start()
        # the condition: the run logged that it waits, naming who holds the pool
        while True:
            waiting = [
                m
                for run_id in _run_ids(instance)
                for m in _messages(instance, run_id)
                if m.startswith(f"waiting for pool {POOL}")
            ]
            if waiting or not worker.is_alive():
                break
            threading.Event().wait(0.1)
        assert waiting, f"{asset} finished without waiting for the pool lock: {results}"
        assert HOLDER["run"] in waiting[0], waiting[0]
        (run_id,) = _run_ids(instance)
        assert not instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records, f"{asset} materialised while another process held the pool"
        assert worker.is_alive()
    assert holder_waits == []
    worker.join(timeout=600)
    assert not worker.is_alive()
    (result,) = results
    assert result.success
    assert result.asset_materializations_for_node(asset)
    assert (
        runs.pool_lock_path(instance, POOL).read_text() == ""
    )  # the holder's note is cleared with the lock


def test_the_lock_of_a_killed_process_is_free_at_once(instance: dg.DagsterInstance):
    """A run killed inside a deployment step (kill -9) holds nothing afterwards: the kernel
    drops a flock with its process, unlike a claimed Dagster slot."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, threading, dagster as dg\n"
            "from churn_platform import runs\n"
            "with dg.DagsterInstance.from_config(sys.argv[1]) as inst:\n"
            f"    with runs.exclusive_step(inst, {POOL!r}, {{'run': 'killed'}}, print):\n"
            "        print('held', flush=True)\n"
            "        threading.Event().wait()\n",
            instance.root_directory,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock_path = runs.pool_lock_path(instance, POOL)
        # held: a non-blocking try fails
        with lock_path.open("a+") as probe, pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert "killed" in lock_path.read_text()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    waits: list[str] = []
    with runs.exclusive_step(instance, POOL, {"run": "next"}, waits.append):
        assert "next" in runs.pool_lock_path(instance, POOL).read_text()
    assert waits == []  # taken at the first try


def test_an_in_memory_instance_takes_no_lock():
    """One process, pools not enforced: nothing to guard, no lock file written."""
    with (
        dg.DagsterInstance.ephemeral() as inst,
        runs.exclusive_step(inst, POOL, {"run": "x"}, print),
    ):
        assert not runs.pool_lock_path(inst, POOL).parent.exists()
