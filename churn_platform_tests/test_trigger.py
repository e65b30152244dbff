"""``python -m churn_platform trigger`` against a real Dagster webserver.

The webserver runs on this repository's ``workspace.yaml`` with a temporary
``DAGSTER_HOME`` whose instance queues runs (``QueuedRunCoordinator``) and no daemon
dequeues them: the test checks what CI's trigger creates (a ``churn_retraining`` run with
its tags) without running the pipeline. The location runs with ``GIT_COMMIT=SHA``, the commit
it reports and the trigger checks.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from churn_platform.config import load_config
from churn_platform.resources.notify import Notifier
from churn_platform.testing import dagster_webserver, free_port
from churn_platform_tests.pipeline import resource


def _code_version() -> str:
    """The training code version the code location computes for the default model."""
    from churn_platform.defs.model import training_code_version

    return training_code_version(load_config({}).model().spec)


pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
SHA = "0123456789abcdef0123456789abcdef01234567"  # the commit the code location reports
TOKEN = "Bearer s3cret"


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
        GIT_COMMIT=SHA,
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


def _runs(home: Path, clear: bool = False) -> list[dg.DagsterRun]:
    """The instance's runs (deleted first with ``clear``: each test starts from none)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        if clear:
            for run in instance.get_runs():
                instance.delete_run(run.run_id)
        return list(instance.get_runs())


def _launched(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"launched churn_retraining run ([0-9a-f-]{36}): (\S+)", done.stdout)
    assert match, done.stdout
    return match.group(1), match.group(2)


def test_trigger_launches_churn_retraining_with_the_commit_and_reason(
    dagster: tuple[str, Path],
) -> None:
    code_version = _code_version()

    url, home = dagster
    _runs(home, clear=True)
    run_id, run_url = _launched(_trigger("--url", url, "--reason", "code", "--commit", SHA))
    assert run_url == f"{url}/runs/{run_id}"

    (run,) = _runs(home)
    assert run.run_id == run_id
    assert run.job_name == "churn_retraining"
    assert run.tags["churn/trigger"] == "code"
    assert run.tags["churn/commit"] == SHA
    assert run.tags["churn/code_version"] == code_version  # the location's training code
    # the job's own tags are kept beside the trigger's
    assert run.tags["churn/pipeline"] == "retraining"


def test_a_location_on_another_commit_is_refused(dagster: tuple[str, Path]) -> None:
    url, home = dagster
    _runs(home, clear=True)
    done = _trigger("--url", url, "--reason", "code", "--commit", "fedcba9876543210")
    assert done.returncode == 1
    assert f"runs commit {SHA}, not fedcba9876543210" in done.stderr, done.stderr
    assert "nothing launched" in done.stderr
    assert _runs(home) == []
    # a short SHA of the commit it runs is the same commit
    _launched(_trigger("--url", url, "--reason", "code", "--commit", SHA[:12]))


def test_one_push_gets_one_run_whoever_asks_again(dagster: tuple[str, Path]) -> None:
    """A re-run of the CI job finds the push's run; so does the code-version sensor, whose
    cursor the trigger set to the code version its run trains."""
    from churn_platform.defs import automation, model

    url, home = dagster
    _runs(home, clear=True)
    run_id, _ = _launched(_trigger("--url", url, "--reason", "code", "--commit", SHA))
    again = _trigger("--url", url, "--reason", "code", "--commit", SHA)
    assert again.returncode == 0, again.stderr
    assert f"nothing launched: a churn_retraining run for commit {SHA} already exists" in (
        again.stdout
    )
    assert run_id in again.stdout
    assert [r.run_id for r in _runs(home)] == [run_id]

    cursor = _graphql(url, SENSOR_CURSOR)["sensorOrError"]["sensorState"]["typeSpecificData"]
    assert cursor["lastCursor"] == _code_version()
    # the sensor, seeing a model trained with older code, does not ask for a second run

    @dg.asset(name=model.ASSET, code_version="older-code")
    def challenger_model() -> int:
        return 1

    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize([challenger_model], instance=instance)
        tick = automation.build_code_version_sensor(load_config({}).model()).evaluate_tick(
            dg.build_sensor_context(
                instance=instance,
                cursor=cursor["lastCursor"],
                resources={"notifier": Notifier(), "storage": resource("storage")},
            )
        )
    assert not tick.run_requests and "already requested" in (tick.skip_message or "")


def test_a_run_the_sensor_launched_first_is_the_pushs_run(dagster: tuple[str, Path]) -> None:
    from dagster_graphql import DagsterGraphQLClient

    code_version = _code_version()

    url, home = dagster
    _runs(home, clear=True)
    host, port = url.removeprefix("http://").split(":")
    sensor_run = DagsterGraphQLClient(host, port_number=int(port)).submit_job_execution(
        "churn_retraining",
        tags={"dagster/sensor_name": "code_version_sensor", "churn/code_version": code_version},
    )
    done = _trigger("--url", url, "--reason", "code", "--commit", SHA)
    assert done.returncode == 0, done.stderr
    assert "nothing launched: code_version_sensor already launched it" in done.stdout
    assert sensor_run in done.stdout
    assert [r.run_id for r in _runs(home)] == [sensor_run]


SENSOR_CURSOR = """{ sensorOrError(sensorSelector: {repositoryLocationName: "churn_platform",
  repositoryName: "__repository__", sensorName: "code_version_sensor"}) {
  ... on Sensor { sensorState { typeSpecificData { ... on SensorData { lastCursor } } } } } }"""


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        json.dumps({"query": query}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["data"]


@pytest.fixture
def guarded(dagster: tuple[str, Path]) -> Iterator[str]:
    """A proxy in front of the webserver that answers 401 unless ``Authorization: TOKEN``."""
    upstream = dagster[0]

    class Guard(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if self.headers.get("Authorization") != TOKEN:
                self.send_error(401, "Unauthorized")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = urllib.request.Request(
                upstream + self.path,
                body or None,
                {"Content-Type": self.headers.get("Content-Type", "application/json")},
                method=self.command,
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                data, status = response.read(), response.status
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Guard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_trigger_sends_the_auth_header_it_is_given(
    dagster: tuple[str, Path], guarded: str
) -> None:
    _, home = dagster
    _runs(home, clear=True)
    refused = _trigger("--url", guarded, "--reason", "code", "--commit", SHA)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    assert "--header 'Authorization: ...'" in refused.stderr
    with pytest.raises(urllib.error.HTTPError):  # the proxy does guard the webserver
        _graphql(guarded, SENSOR_CURSOR)
    args = ("--url", guarded, "--reason", "code", "--commit", SHA)
    run_id, run_url = _launched(_trigger(*args, "--header", f"Authorization: {TOKEN}"))
    assert run_url == f"{guarded}/runs/{run_id}"
    assert [r.run_id for r in _runs(home)] == [run_id]
    bad = _trigger(*args, "--header", "no colon here")
    assert bad.returncode == 2 and "give KEY:VALUE" in bad.stderr


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
