"""Alertmanager: the cluster's config passes ``amtool check-config`` (rendered locally and by
the Kubernetes container's own start script), and ``python -m churn_platform.serving
prometheus --alertmanager`` runs a real Alertmanager that Prometheus sends to and that
delivers an alert to the platform's webhook and to Slack (a local HTTP receiver for both)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from churn_platform.serving.alertmanager import (
    ALERTMANAGER_TEMPLATE,
    Channels,
    find_binary,
    render_alertmanager_config,
)
from churn_platform.testing import free_port
from churn_platform_tests.http_receiver import Receiver

REPO = Path(__file__).resolve().parents[1]
K8S_ALERTMANAGER = REPO / "deploy" / "k8s" / "alertmanager"
requires_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None or find_binary() is None,
    reason="amtool/alertmanager not installed (apt-get install prometheus-alertmanager)",
)
requires_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed"
)


def amtool_check(config: Path) -> None:
    done = subprocess.run(
        ["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{config.read_text()}\n{done.stdout}\n{done.stderr}"
    assert "SUCCESS" in done.stdout


@requires_amtool
@pytest.mark.parametrize("webhook,slack", [(True, True), (True, False), (False, False)])
def test_rendered_config_passes_amtool(tmp_path: Path, webhook: bool, slack: bool) -> None:
    channels = Channels(
        webhook_url="https://hooks.example.com/churn?a=1&b=2" if webhook else "",
        slack_token_file=str(tmp_path / "token") if slack else "",
    )
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_config(channels))
    amtool_check(config)
    receivers = {r["name"]: r for r in yaml.safe_load(config.read_text())["receivers"]}
    assert ("webhook_configs" in receivers["churn-webhook"]) is webhook
    assert ("slack_configs" in receivers["churn-slack"]) is slack


@requires_amtool
def test_the_cluster_containers_start_script_renders_a_config_amtool_accepts(
    tmp_path: Path,
) -> None:
    """The script of deploy/k8s/alertmanager/deployment.yaml, run by a real shell with the
    Secret's values (a URL with the characters sed treats specially)."""
    [deployment, service] = yaml.safe_load_all((K8S_ALERTMANAGER / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert "/etc/alertmanager/template/alertmanager.yml" in script
    template = tmp_path / "template"
    template.mkdir()
    shutil.copy(ALERTMANAGER_TEMPLATE, template / "alertmanager.yml")
    script = (
        script.replace("/etc/alertmanager/template", str(template))
        .replace("/alertmanager/alertmanager.yml", str(tmp_path / "out.yml"))
        .split("exec /bin/alertmanager")[0]
    )
    url = "https://hooks.example.com/x?a=1&b=2|3"
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    env.update(CHURN_WEBHOOK_URL=url, PATH=os.environ["PATH"])
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    amtool_check(tmp_path / "out.yml")
    rendered = yaml.safe_load((tmp_path / "out.yml").read_text())
    by_name = {r["name"]: r for r in rendered["receivers"]}
    assert by_name["churn-webhook"]["webhook_configs"][0]["url"] == url
    assert service["spec"]["ports"][0]["port"] == 9093
    prometheus = yaml.safe_load((REPO / "deploy/k8s/prometheus/prometheus.yml").read_text())
    [target] = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager.churn-monitoring.svc:9093"


def _wait(what: str, ready, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@requires_amtool
@requires_prometheus
def test_the_command_routes_an_alert_to_the_webhook_and_slack(
    tmp_path: Path, receiver: Receiver
) -> None:
    prometheus, manager = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = dict(os.environ, CHURN_HOME=str(tmp_path / "home"))
    env.update(CHURN_WEBHOOK_URL=f"{receiver.url}/hook", CHURN_SLACK_TOKEN="xoxb-test-token")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    log = tmp_path / "serving.log"
    argv = [sys.executable, "-m", "churn_platform.serving", "prometheus", "--alertmanager"]
    argv += ["--listen", prometheus, "--alertmanager-listen", manager]
    argv += [
        "--alertmanager-group-wait",
        "1s",
        "--slack-api-url",
        f"{receiver.url}/api/chat.postMessage",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait("alertmanager not ready", lambda: _answers(f"http://{manager}/-/ready"), proc, log)
        _wait("prometheus not ready", lambda: _answers(f"http://{prometheus}/-/ready"), proc, log)

        def prometheus_knows_it() -> bool:
            found = httpx.get(f"http://{prometheus}/api/v1/alertmanagers").json()["data"]
            return any(manager in a["url"] for a in found["activeAlertmanagers"])

        _wait("prometheus does not send to alertmanager", prometheus_knows_it, proc, log)
        alert = {
            "labels": {"alertname": "ChurnModelHighErrorRate", "severity": "page"},
            "annotations": {"summary": "churn model version 7 answers 20% with 5xx"},
        }
        posted = httpx.post(f"http://{manager}/api/v2/alerts", json=[alert], timeout=10)
        assert posted.status_code == 200, posted.text
        _wait("no message", lambda: len(receiver.posts) >= 2, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    hook = next(p for p in receiver.posts if p["path"] == "/hook")
    assert hook["body"]["alerts"][0]["labels"]["alertname"] == "ChurnModelHighErrorRate"
    slack = next(p for p in receiver.posts if p["path"].startswith("/api/"))
    assert slack["headers"]["Authorization"] == "Bearer xoxb-test-token"
    assert (
        slack["path"] == "/api/chat.postMessage" and slack["body"]["channel"] == "#churn-platform"
    )
    assert "answers 20% with 5xx" in slack["body"]["attachments"][0]["text"]
    assert proc.returncode == 0
    assert not _answers(f"http://{manager}/-/ready")  # stopped with Prometheus
