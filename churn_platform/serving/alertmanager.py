"""Alertmanager beside the local Prometheus: its config rendered from the cluster's template
(``deploy/k8s/alertmanager/alertmanager.yml``), Prometheus pointed at it, both supervised.

``python -m churn_platform.serving prometheus --alertmanager`` uses it: the alerts of
``churn-alerts.rules.yml`` reach the platform's webhook (``CHURN_WEBHOOK_URL``) and Slack
(``CHURN_SLACK_TOKEN``, ``CHURN_SLACK_CHANNEL``) as they do on a cluster.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER_TEMPLATE = PROJECT_ROOT / "deploy" / "k8s" / "alertmanager" / "alertmanager.yml"
SLACK_API_URL = "https://slack.com/api/chat.postMessage"
# Debian's package names the binary prometheus-alertmanager; upstream's is alertmanager
BINARIES = ("alertmanager", "prometheus-alertmanager")
WEBHOOK_RECEIVER, SLACK_RECEIVER = "churn-webhook", "churn-slack"


@dataclass(frozen=True)
class Channels:
    """Where alerts go: the platform's webhook and Slack (a bot token in a file, read by
    Alertmanager per request). An empty setting leaves its channel out."""

    webhook_url: str = ""
    slack_token_file: str = ""
    slack_channel: str = "#churn-platform"
    slack_api_url: str = SLACK_API_URL


def render_alertmanager_config(
    channels: Channels, group_wait: str = "", template: Path = ALERTMANAGER_TEMPLATE
) -> str:
    """The template with its placeholders filled in; a receiver without its setting keeps
    its route but sends nowhere (``group_wait``: a shorter wait before the first message)."""
    text = (
        template.read_text()
        .replace("__WEBHOOK_URL__", channels.webhook_url)
        .replace("__SLACK_API_URL__", channels.slack_api_url)
        .replace("__SLACK_CHANNEL__", channels.slack_channel)
        .replace("__SLACK_TOKEN_FILE__", channels.slack_token_file)
    )
    config: dict[str, Any] = yaml.safe_load(text)
    for receiver in config["receivers"]:
        if receiver["name"] == WEBHOOK_RECEIVER and not channels.webhook_url:
            receiver.pop("webhook_configs")
        if receiver["name"] == SLACK_RECEIVER and not channels.slack_token_file:
            receiver.pop("slack_configs")
    if group_wait:
        config["route"]["group_wait"] = group_wait
    return yaml.safe_dump(config, sort_keys=False)


def alerting_section(address: str) -> str:
    """The Prometheus config lines that send its alerts to the Alertmanager at ``address``."""
    return yaml.safe_dump(
        {"alerting": {"alertmanagers": [{"static_configs": [{"targets": [address]}]}]}}
    )


def find_binary(name: str = "") -> str | None:
    """The Alertmanager binary: ``name`` when given, else the first of ``BINARIES`` on PATH."""
    for candidate in [name] if name else BINARIES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def alertmanager_argv(binary: str, config: Path, storage: Path, listen: str) -> list[str]:
    """The command line of a single local Alertmanager (no cluster peers)."""
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address={listen}",
        "--cluster.listen-address=",
    ]


def supervise(prometheus: list[str], alertmanager: list[str]) -> int:
    """Run Alertmanager and Prometheus until either exits or this process is told to stop
    (SIGTERM, SIGINT); stop both either way. Returns Prometheus' exit code."""
    manager = subprocess.Popen(alertmanager)
    server = subprocess.Popen(prometheus)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while server.poll() is None and manager.poll() is None:
            try:
                server.wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (server, manager):
            if proc.poll() is None:
                proc.terminate()
        for proc in (server, manager):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return server.returncode or 0
