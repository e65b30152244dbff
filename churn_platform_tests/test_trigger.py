"""``python -m churn_platform trigger`` against a real Dagster webserver.

The webserver runs on this repository's ``workspace.yaml`` with a temporary
``DAGSTER_HOME`` whose instance queues runs (``QueuedRunCoordinator``) and no daemon
dequeues them: the test checks what CI's trigger creates (a ``churn_retraining`` run with
its tags) without running the pipeline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from churn_platform.testing import dagster_webserver, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"


@pytest.fixture(scope="module")
def dagster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, DAGSTER_HOME) of a running dagster-webserver; stopped by its PID after."""
    if not WEBSERVER.exists():
        pytest.skip(f"{WEBSERVER} not installed (dagster-webserver)")
    root = tmp_path_factory.mktemp("dagster")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "telemetry:\n  enabled: false\n"
    )
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        CHURN_HOME=str(root / "churn_home"),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    with dagster_webserver(env, root / "webserver.log") as url:
        yield url, home


def _trigger(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "churn_platform.trigger", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_trigger_launches_churn_retraining_with_the_commit_and_reason(
    dagster: tuple[str, Path],
) -> None:
    from dagster import DagsterInstance

    url, home = dagster
    sha = "0123456789abcdef0123456789abcdef01234567"
    done = _trigger("--url", url, "--reason", "code", "--commit", sha)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"run ([0-9a-f-]{36}): (\S+)", done.stdout)
    assert match, done.stdout
    run_id, run_url = match.groups()
    assert run_url == f"{url}/runs/{run_id}"

    with DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None
    assert run.job_name == "churn_retraining"
    assert run.tags["churn/trigger"] == "code"
    assert run.tags["churn/commit"] == sha
    # the job's own tags are kept beside the trigger's
    assert run.tags["churn/pipeline"] == "retraining"


def test_trigger_names_the_job_and_url_when_dagster_refuses(dagster: tuple[str, Path]) -> None:
    url, _ = dagster
    done = _trigger("--url", url, "--reason", "code", "--job", "no_such_job")
    assert done.returncode == 1
    assert "no_such_job" in done.stderr and url in done.stderr


def test_trigger_says_when_nothing_listens() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = _trigger("--url", url, "--reason", "code", "--commit", "abc")
    assert done.returncode == 1
    assert url in done.stderr and "webserver running" in done.stderr
