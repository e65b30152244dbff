"""The serving watchdog with real processes: ``serving_watchdog_sensor`` evaluated tick after
tick as the daemon runs it, against a real router and model servers on 127.0.0.1, a real
MLflow store, a SQLite Dagster instance and a real HTTP receiver for the notifications.

* chaos: steady client traffic, then kill -9 of every serving process; the watchdog brings
  production back on the same URL and notifies once (the outage is printed, not asserted:
  the watchdog benchmark measures it); once with the ticks evaluated here, once by the real
  ``dagster-daemon run`` on the platform's workspace;
* what cannot be repaired (a champion that never starts) is reported with the commands, once;
* ``sensors tick`` of the watchdog is a dry run that repairs nothing;
* a 95/5 split left by no release goes back to the champion, notified once; while a
  deployment step holds the pool the watchdog leaves the split alone;
* the episode logic with an in-memory target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from churn_platform import runs
from churn_platform.config import load_config
from churn_platform.core import records as r
from churn_platform.core.rollout import EnvironmentState, ServedVersion
from churn_platform.core.watchdog import WatchEpisode, WatchReport, observe, watch
from churn_platform.defs.deployment import deployment_pool
from churn_platform.defs.serving_watchdog import build_serving_watchdog
from churn_platform.resources.deployment_target import LocalDeploymentResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import SERVING_UNHEALTHY, Notifier
from churn_platform.resources.storage import StorageResource
from churn_platform.targets.local import LocalProcessTarget, is_running
from churn_platform.testing import PacedLoad, RegisteredModels, make_registered_models, to_records
from churn_platform_tests.http_receiver import Receiver

pytestmark = pytest.mark.integration

CONFIG = load_config({})
MODEL = CONFIG.model()
REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 240.0  # generous: a loaded 2-core machine starts a model server in seconds


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModels:
    """Versions 1 and 2 in a store of this module's own (its aliases are moved here)."""
    root = tmp_path_factory.mktemp("watchdog_mlflow")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return make_registered_models(root)
    finally:
        os.chdir(cwd)


class Watchdog:
    """The sensor, its resources and the cursor the daemon would carry between ticks."""

    def __init__(self, models: RegisteredModels, root: Path, receiver: Receiver) -> None:
        self.deployment = LocalDeploymentResource(
            state_dir=str(root / "deployments"), tracking_uri=models.tracking_uri
        )
        self.registry = MlflowRegistry(tracking_uri=models.tracking_uri)
        self.resources = {
            "notifier": Notifier(webhook_url=receiver.url + "/hook"),
            "storage": StorageResource(base_url=str(root / "storage")),
            "mlflow_registry": self.registry,
            "deployment": self.deployment,
        }
        (root / "dagster").mkdir()
        self.instance = dg.DagsterInstance.local_temp(str(root / "dagster"))
        self.sensor = build_serving_watchdog(MODEL, CONFIG)
        self.cursor: str | None = None

    def tick(self) -> str:
        """One evaluation as the daemon runs it; the cursor is kept; returns the skip reason."""
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result = self.sensor.evaluate_tick(context)
        if result.cursor is not None:
            self.cursor = result.cursor
        return result.skip_message or ""


@pytest.fixture
def watchdog(
    models: RegisteredModels, tmp_path: Path, receiver: Receiver
) -> Iterator[tuple[Watchdog, LocalProcessTarget]]:
    dog = Watchdog(models, tmp_path, receiver)
    target = dog.deployment.target()
    try:
        yield dog, target
    finally:
        target.stop_all()
        dog.instance.dispose()


def kill_all(target: LocalProcessTarget) -> list[int]:
    """SIGKILL every recorded process of production (servers and router) at once."""
    saved = json.loads(target.state_file(r.PRODUCTION).read_text())
    pids = [rec["pid"] for rec in saved["versions"].values()] + [saved["router"]["pid"]]
    for pid in pids:
        os.killpg(pid, signal.SIGKILL)
    return pids


def test_kill_9_of_every_serving_process_is_repaired_on_the_same_url_and_notified_once(
    watchdog: tuple[Watchdog, LocalProcessTarget], models: RegisteredModels, receiver: Receiver
) -> None:
    dog, target = watchdog
    dog.registry.set_alias(r.CHAMPION, "2")
    target.deploy(r.PRODUCTION, "1", models.model_uris["1"])  # previous, kept at 0%
    target.deploy(r.PRODUCTION, "2", models.model_uris["2"])
    endpoint = target.set_weights(r.PRODUCTION, {"2": 100}).endpoint
    assert endpoint
    assert dog.tick() == "every deployment healthy"
    with PacedLoad(endpoint, to_records(models.rows.head(1)), rate=20) as load:
        deadline = time.monotonic() + DEADLINE_S
        while not any(status == 200 for _, status, _ in load.results):
            assert time.monotonic() < deadline, "no 200 from production before the kill"
            time.sleep(0.1)
        pids = kill_all(target)
        killed_at = time.monotonic()
        while any(is_running(pid) for pid in pids):  # SIGKILL is not instant on a loaded machine
            time.sleep(0.05)
        ticks = 0
        while not any(t > killed_at and s == 200 for t, s, _ in list(load.results)):
            assert time.monotonic() < deadline, f"production not back after {ticks} ticks"
            dog.tick()
            ticks += 1
            time.sleep(0.5)
        for _ in range(3):  # more ticks: healthy again, the episode closes, no second message
            dog.tick()
    results = list(load.results)
    first_ok = min(t for t, s, _ in results if t > killed_at and s == 200)
    failed = sorted({s for t, s, _ in results if killed_at < t < first_ok})
    print(f"kill -9 -> first 200: {first_ok - killed_at:.2f} s ({ticks} tick(s); {failed})")

    assert target.state(r.PRODUCTION).endpoint == endpoint
    assert target.live_weights(r.PRODUCTION) == {"1": 0, "2": 100}
    assert not target.down(r.PRODUCTION)
    assert failed, "the kill was never seen by the client: the test proved nothing"
    messages = [p["body"] for p in receiver.posts]
    assert len(messages) == 1, messages
    (message,) = messages
    assert message["event"] == SERVING_UNHEALTHY and message["model_version"] == "2"
    assert "router of production" in message["reason"] and "is not running" in message["reason"]
    assert "restarted at " + endpoint in message["reason"]
    assert WatchEpisode.parse(dog.cursor) == WatchEpisode()  # closed by the healthy ticks


def test_a_split_no_release_holds_goes_back_to_the_champion_but_not_during_a_release(
    watchdog: tuple[Watchdog, LocalProcessTarget], models: RegisteredModels, receiver: Receiver
) -> None:
    dog, target = watchdog
    dog.registry.set_alias(r.CHAMPION, "1")
    target.deploy(r.PRODUCTION, "1", models.model_uris["1"])
    target.deploy(r.PRODUCTION, "2", models.model_uris["2"])
    target.set_weights(r.PRODUCTION, {"1": 95, "2": 5})  # a canary whose run was killed

    reason = dog.tick()
    assert target.live_weights(r.PRODUCTION) == {"1": 100, "2": 0}
    assert "sends v1 95%, v2 5% with no release running" in reason
    assert "now 100% on champion v1" in reason
    assert dog.tick() == "every deployment healthy"
    assert [p["body"]["event"] for p in receiver.posts] == [SERVING_UNHEALTHY]
    assert "v1 95%, v2 5%" in receiver.posts[0]["body"]["reason"]
    # the other intent keeps its command: make the canary the champion instead
    assert "python -m churn_platform rollback --to 2" in receiver.posts[0]["body"]["reason"]

    # a release holds the deployment pool: its canary split is not a leftover
    target.set_weights(r.PRODUCTION, {"1": 75, "2": 25})
    pool = deployment_pool(MODEL)
    with runs.exclusive_step(dog.instance, pool, {"run": "release-run"}, print):
        reason = dog.tick()
        assert "holds churn_deployment" in reason and "release-run" in reason
        assert target.live_weights(r.PRODUCTION) == {"1": 75, "2": 25}
    dog.tick()  # the release's process died without restoring: the split is a leftover now
    assert target.live_weights(r.PRODUCTION) == {"1": 100, "2": 0}
    assert len(receiver.posts) == 2  # a new episode, told once


def test_what_cannot_be_repaired_is_reported_with_the_commands_once(
    models: RegisteredModels, tmp_path: Path, receiver: Receiver
) -> None:
    dog = Watchdog(models, tmp_path, receiver)
    # the watchdog's target gives a new server 0.5 s to answer: the champion never starts
    dog.resources["deployment"] = LocalDeploymentResource(
        state_dir=str(tmp_path / "deployments"),
        tracking_uri=models.tracking_uri,
        health_timeout_seconds=0.5,
    )
    target = dog.deployment.target()
    try:
        target.deploy(r.PRODUCTION, "1", models.model_uris["1"])
        target.set_weights(r.PRODUCTION, {"1": 100})
        dog.registry.set_alias(r.CHAMPION, "2")  # a champion production never got
        reasons = [dog.tick() for _ in range(3)]
        for reason in reasons:
            assert "the repair failed: RuntimeError" in reason
            assert "STILL WRONG: champion alias names v2 but the router sends v1 100%" in reason
            assert "python -m churn_platform rollback --to 1" in reason
            assert "python -m churn_platform rollback --to 2" in reason
        assert target.live_weights(r.PRODUCTION) == {"1": 100}  # still served meanwhile
        assert len(receiver.posts) == 1  # one episode, told once
        assert "STILL WRONG" in receiver.posts[0]["body"]["reason"]
        assert WatchEpisode.parse(dog.cursor).ticks == 3
    finally:
        target.stop_all()
        dog.instance.dispose()


class MemoryTarget:
    """A ``DeploymentTarget`` in memory whose router can be "down"."""

    def __init__(self, weights: dict[str, int]) -> None:
        self.weights, self.router_up = dict(weights), True

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        self.weights.setdefault(version, 0)
        return ServedVersion(version, model_uri, "http://x", self.weights[version])

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        self.weights = {v: int(weights.get(v, 0)) for v in self.weights}
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        versions = tuple(ServedVersion(v, "m", "http://x", w) for v, w in self.weights.items())
        return EnvironmentState(environment, "http://r" if self.router_up else None, versions)

    def retire(self, environment: str, version: str) -> None:
        self.weights.pop(version, None)


class Aliases:
    def __init__(self, **aliases: str) -> None:
        self.aliases = aliases

    def alias_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        pass

    def model_uri(self, version: str) -> str:
        return f"models:/m/{version}"


def test_watch_repairs_a_leftover_split_and_deploys_nothing_where_nothing_ran() -> None:
    nothing = MemoryTarget({})
    nothing.router_up = False
    assert observe(nothing, r.PRODUCTION, "1") == []  # never deployed: left alone
    target = MemoryTarget({"1": 95, "2": 5})
    report = watch(target, Aliases(champion="1"), r.PRODUCTION, repair=False)
    assert report.findings and target.weights == {"1": 95, "2": 5}
    report = watch(target, Aliases(champion="1"), r.PRODUCTION)
    assert target.weights == {"1": 100, "2": 0} and not report.remaining
    assert report.repairs == ("production traffic was {'1': 95, '2': 5}; now 100% on champion v1",)


def test_one_notification_per_episode() -> None:
    sick: Any = WatchReport(r.PRODUCTION, ("router down",))
    well = WatchReport(r.PRODUCTION)
    episode, notify = WatchEpisode().advance([well], 1.0)
    assert not notify and not episode.open
    episode, notify = episode.advance([sick, well], 2.0)
    assert notify and episode == WatchEpisode(True, 2.0, 1)
    episode, notify = WatchEpisode.parse(episode.dumps()).advance([sick], 3.0)
    assert not notify and episode == WatchEpisode(True, 2.0, 2)
    episode, notify = episode.advance([well], 4.0)
    assert not notify and episode == WatchEpisode()
    assert WatchEpisode.parse("not json") == WatchEpisode()


def test_the_dead_deployment_alerts_name_the_local_prometheus_jobs() -> None:
    """``up`` of a job no Prometheus config scrapes would never be 0: the alert would be dead."""
    repo = Path(__file__).resolve().parent.parent
    rules = yaml.safe_load((repo / "deploy/k8s/prometheus/churn-alerts.rules.yml").read_text())
    exprs = {
        rule["alert"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    local = yaml.safe_load((repo / "deploy/local/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in local["scrape_configs"]}
    for alert in ("ChurnServingTargetDown", "ChurnServingAbsent"):
        named = re.findall(r'job=~?"([^"]+)"', exprs[alert])
        assert named, alert
        for job in (j for pattern in named for j in pattern.split("|")):
            assert job in jobs, f"{alert} names job {job}; the local config has {sorted(jobs)}"


def test_sensors_tick_dry_run_of_the_watchdog_reports_and_touches_nothing(
    churn_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from churn_platform import cli

    monkeypatch.setenv("DAGSTER_HOME", str(churn_home / "dagster"))
    state_file = churn_home / "deployments" / r.PRODUCTION / "state.json"
    state_file.parent.mkdir(parents=True)
    gone = 2**22 + 7  # above every pid this machine hands out: no process
    record = {"pid": gone, "port": 1, "url": "http://127.0.0.1:1", "log": "", "started_at": 0}
    state = {
        "environment": r.PRODUCTION,
        "router": record,
        "versions": {"2": {**record, "model_uri": "models:/churn_model/2", "weight": 100}},
    }
    state_file.write_text(json.dumps(state))

    assert cli.main(["sensors", "tick", "serving_watchdog_sensor"]) == 0
    out = capsys.readouterr().out
    assert f"router of production (pid {gone}, http://127.0.0.1:1) is not running" in out
    assert "v2 of production (pid" in out and "100% of the traffic) is not running" in out
    assert "decision: a tick would repair this (dry run" in out
    assert json.loads(state_file.read_text()) == state  # nothing restarted


def test_the_dagster_daemon_runs_the_watchdog_after_a_kill_9_of_everything(
    models: RegisteredModels, tmp_path: Path, receiver: Receiver
) -> None:
    """The real ``dagster-daemon run -w workspace.yaml`` on the platform's definitions:
    nothing but the daemon's own sensor loop brings production back and notifies."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    home.mkdir()
    dagster_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    env |= {
        "CHURN_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "MLFLOW_TRACKING_URI": models.tracking_uri,
        "CHURN_WEBHOOK_URL": receiver.url + "/hook",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    }
    MlflowRegistry(tracking_uri=models.tracking_uri).set_alias(r.CHAMPION, "2")
    target = LocalProcessTarget(home / "deployments", models.tracking_uri)
    log = tmp_path / "daemon.log"
    daemon = None
    try:
        target.deploy(r.PRODUCTION, "2", models.model_uris["2"])
        endpoint = target.set_weights(r.PRODUCTION, {"2": 100}).endpoint or ""
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "dagster-daemon"),
                    "run",
                    "-w",
                    "workspace.yaml",
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 600  # loading the code location on a loaded machine
        while watchdog_ticks(log) < 1:
            assert daemon.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        with PacedLoad(endpoint, to_records(models.rows.head(1)), rate=10) as load:
            pids = kill_all(target)
            killed_at = time.monotonic()
            while not any(t > killed_at and s == 200 for t, s, _ in list(load.results)):
                assert time.monotonic() < killed_at + DEADLINE_S, log.read_text()[-3000:]
                time.sleep(0.2)
        first_ok = min(t for t, s, _ in load.results if t > killed_at and s == 200)
        print(f"daemon: kill -9 -> first 200: {first_ok - killed_at:.2f} s")
        assert not any(is_running(pid) for pid in pids)
        assert target.state(r.PRODUCTION).endpoint == endpoint
        after = watchdog_ticks(log)
        while watchdog_ticks(log) < after + 2:  # two more ticks: the episode ends, untold
            assert time.monotonic() < killed_at + 2 * DEADLINE_S, log.read_text()[-3000:]
            time.sleep(0.5)
        told = [p["body"] for p in receiver.posts if p["body"]["event"] == SERVING_UNHEALTHY]
        assert len(told) == 1, told
        assert "router of production" in told[0]["reason"] and endpoint in told[0]["reason"]
    finally:
        if daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        target.stop_all()


def watchdog_ticks(log: Path) -> int:
    """How many ticks of the watchdog the daemon has logged."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(re.findall(r"Checking for new runs for sensor: serving_watchdog_sensor", text))


def test_where_no_lock_is_taken_a_run_with_a_claimed_slot_holds_the_pool(tmp_path: Path) -> None:
    """PostgreSQL/MySQL storages (Kubernetes): the watchdog reads the pool's slot claims."""
    shutil.copy(REPO / "deploy/local/dagster.yaml", tmp_path / "dagster.yaml")
    pool = deployment_pool(MODEL)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert runs.slot_holder(instance, pool) is None
        job = dg.GraphDefinition("churn_release").to_job()
        run = instance.create_run_for_job(job, tags=runs.process_tags())
        instance.handle_run_event(
            run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name)
        )
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(pool)
        waiting = instance.create_run_for_job(job, tags=runs.process_tags())
        assert storage.claim_concurrency_slot(pool, run.run_id, "production_deployment").is_claimed
        assert not storage.claim_concurrency_slot(pool, waiting.run_id, "staging").is_claimed
        holder = runs.slot_holder(instance, pool)
        assert holder == f"run {run.run_id} (churn_release, {pool}/production_deployment)"
        instance.report_run_failed(instance.get_run_by_id(run.run_id))  # finished: holds nothing
        assert runs.slot_holder(instance, pool) is None


def test_restore_starts_the_router_beside_a_lead_version_that_cannot_start(
    models: RegisteredModels, tmp_path: Path
) -> None:
    target = LocalProcessTarget(tmp_path / "deployments", models.tracking_uri)
    try:
        target.deploy(r.PRODUCTION, "1", models.model_uris["1"])
        target.deploy(r.PRODUCTION, "2", models.model_uris["2"])
        endpoint = target.set_weights(r.PRODUCTION, {"2": 100}).endpoint
        pids = kill_all(target)
        while any(is_running(pid) for pid in pids):
            time.sleep(0.05)
        state = json.loads(target.state_file(r.PRODUCTION).read_text())
        state["versions"]["2"]["model_uri"] = "models:/churn_model/99"  # gone from the registry
        target.state_file(r.PRODUCTION).write_text(json.dumps(state))

        repairs = target.restore(r.PRODUCTION)
        assert repairs[0] == f"router of production was down; restarted at {endpoint}"
        assert repairs[1].startswith("v2 of production could not be restarted: ")
        assert repairs[2].startswith("v1 of production was down; restarted at ")
        assert target.state(r.PRODUCTION).endpoint == endpoint
        assert target.state(r.PRODUCTION).weights() == {"1": 0}
        assert target.live_weights(r.PRODUCTION) == {"1": 0}
    finally:
        target.stop_all()
