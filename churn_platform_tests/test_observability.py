"""Observability that ships with the platform, checked with the real tools.

* ``python -m churn_platform.serving prometheus`` renders ``deploy/local/prometheus.yml``
  (``--render-only``: a config ``promtool check config`` accepts) and runs a real
  Prometheus that answers ``/-/ready`` and has loaded the alert rules.
* every PromQL expression of the Grafana dashboard ``deploy/grafana/churn-serving.json``
  parses: each one is sent to that Prometheus's ``/api/v1/query`` (400 on a parse error).
* the alert rules' ``promtool test rules`` cases run in ``test_k8s_objects.py``; here:
  the alerts the runbook names exist.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from churn_platform.testing import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "churn-serving.json"
RULES = REPO / "deploy" / "k8s" / "prometheus" / "churn-alerts.rules.yml"
# Grafana's interval variables, as Grafana would substitute them for a short range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

requires_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool not installed (Debian package prometheus)",
)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CHURN_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _serving(*args: str) -> list[str]:
    return [sys.executable, "-m", "churn_platform.serving", "prometheus", *args]


@requires_prometheus
def test_rendered_config_passes_promtool(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    done = subprocess.run(
        _serving("--render-only", "--config", str(config)),
        env=_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "__" not in done.stdout, f"a placeholder was left:\n{done.stdout}"
    rendered = yaml.safe_load(done.stdout)
    assert rendered["rule_files"] == [str(RULES)]
    (targets_file,) = rendered["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert Path(targets_file).is_file()
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Prometheus ``python -m churn_platform.serving prometheus`` runs (it execs it)."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    home = tmp_path_factory.mktemp("prom-home")
    listen = f"127.0.0.1:{free_port()}"
    log = home / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _serving("--listen", listen, "--scrape-interval", "1s"),
            env=_env(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://{listen}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        # the command exec'd prometheus: this PID is Prometheus itself
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_command_runs_prometheus_with_the_alert_rules(prometheus: str) -> None:
    assert httpx.get(prometheus + "/-/ready").status_code == 200
    groups = httpx.get(prometheus + "/api/v1/rules").json()["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert {
        "ChurnModelHighErrorRate",
        "ChurnModelHighLatencyP95",
        "ChurnModelVersionNotLoaded",
    } <= alerts


def _expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_covers_what_a_team_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    text = " ".join(expr for _, expr in _expressions())
    for metric in (
        "http_requests_total",
        'status=~"5.."',
        "histogram_quantile(0.95",
        "router_requests_total",
        "churn_model_loaded",
    ):
        assert metric in text, metric
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_dashboard_expression_parses_in_prometheus(prometheus: str) -> None:
    def query(expr: str) -> httpx.Response:
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        return httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=30)

    # the check can fail: a broken expression is a 400
    assert (
        query("sum by (model_version) (rate(http_requests_total[$__rate_interval])").status_code
        == 400
    )
    for title, expr in _expressions():
        r = query(expr)
        assert r.status_code == 200, f"panel {title!r}: {expr}\n{r.text}"
