"""Credentials stay out of the UI: the webserver's GraphQL (what the resource pages show)
names the variables holding the SQL source URL, the webhook URL and the Slack token, never
their values. A real ``dagster-webserver`` on ``workspace.yaml``, stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from churn_platform.testing import dagster_webserver

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
    with dagster_webserver(env, tmp_path / "webserver.log") as url:
        deadline = time.monotonic() + 600
        found: dict[str, Any] = {}
        while "data_source" not in found:
            assert time.monotonic() < deadline, "the code location's resources never showed"
            with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
                found = resources(url)
            if "data_source" not in found:
                time.sleep(0.5)
        raw = json.dumps(found)
    for name, value in secrets.items():
        assert value not in raw, f"{name}'s value is visible in the UI"
    assert found["data_source"]["url"] == {"value": "CHURN_SOURCE_URL", "type": "ENV_VAR"}
    assert found["data_source"]["table"]["value"] == '"customers"'
    assert found["notifier"]["webhook_url"] == {"value": "CHURN_WEBHOOK_URL", "type": "ENV_VAR"}
    assert found["notifier"]["slack_token"] == {"value": "CHURN_SLACK_TOKEN", "type": "ENV_VAR"}
