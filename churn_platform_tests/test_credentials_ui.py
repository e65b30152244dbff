"""Credentials stay out of the UI: the webserver's GraphQL (what the resource pages show)
names the variables holding the SQL source URL, the webhook URL and the Slack token, never
their values. A real ``dagster-webserver`` on ``workspace.yaml``, stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from churn_platform.testing import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
RESOURCES_QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        allTopLevelResourceDetails { name configuredValues { key value type } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def resources(url: str) -> dict[str, dict[str, dict[str, str]]]:
    """resource name -> config key -> {value, type}, once the code location has loaded."""
    answer = httpx.post(f"{url}/graphql", json={"query": RESOURCES_QUERY}, timeout=30).json()
    nodes = answer["data"]["repositoriesOrError"].get("nodes") or []
    return {
        r["name"]: {
            v["key"]: {"value": v["value"], "type": v["type"]} for v in r["configuredValues"]
        }
        for node in nodes
        for r in node["allTopLevelResourceDetails"]
    }


def test_resource_pages_show_variable_names_not_secrets(tmp_path: Path) -> None:
    if not WEBSERVER.exists():
        pytest.skip(f"{WEBSERVER} not installed (dagster-webserver)")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    secrets = {
        "CHURN_SOURCE_URL": f"sqlite:///{tmp_path}/warehouse-s3cr3t-password.db",
        "CHURN_WEBHOOK_URL": "http://127.0.0.1:9/hooks/T0KEN-in-the-path",
        "CHURN_SLACK_TOKEN": "xoxb-not-for-your-eyes",
    }
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        CHURN_HOME=str(tmp_path / "churn_home"),
        CHURN_SOURCE="sql",
        CHURN_SOURCE_TABLE="customers",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        **secrets,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(WEBSERVER), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the code server goes with it
        )
    try:
        deadline = time.monotonic() + 600
        found: dict[str, Any] = {}
        while "data_source" not in found:
            assert proc.poll() is None, f"webserver exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no resources:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/server_info", timeout=5).status_code == 200:
                    found = resources(url)
            except (httpx.HTTPError, KeyError, TypeError):
                pass
            if "data_source" not in found:
                time.sleep(0.5)
        raw = json.dumps(found)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for name, value in secrets.items():
        assert value not in raw, f"{name}'s value is visible in the UI"
    assert found["data_source"]["url"] == {"value": "CHURN_SOURCE_URL", "type": "ENV_VAR"}
    assert found["data_source"]["table"]["value"] == '"customers"'
    assert found["notifier"]["webhook_url"] == {"value": "CHURN_WEBHOOK_URL", "type": "ENV_VAR"}
    assert found["notifier"]["slack_token"] == {"value": "CHURN_SLACK_TOKEN", "type": "ENV_VAR"}
