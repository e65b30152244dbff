"""Observability that ships with the platform, checked with the real tools.

* ``python -m churn_platform.serving prometheus`` renders ``deploy/local/prometheus.yml``
  (``--render-only``: a config ``promtool check config`` accepts) and runs a real
  Prometheus that answers ``/-/ready`` and has loaded the alert rules.
* every PromQL expression of the Grafana dashboard ``deploy/grafana/churn-serving.json``
  parses: each one is sent to that Prometheus's ``/api/v1/query`` (400 on a parse error).
* every metric a panel names is exported: a real model server and a real router (with the
  drift sensor's PSI document in the storage) are scraped, and each name must be there; the
  local Prometheus finds the router and stores its weight and PSI gauges.
* the alert rules' ``promtool test rules`` cases run in ``test_k8s_objects.py``; here:
  the alerts the runbook names exist.
"""

from __future__ import annotations

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

import httpx
import pytest
import yaml

from churn_platform.core import drift
from churn_platform.core.drift_monitor import PSI_EXPORT_KEY, psi_export
from churn_platform.core.performance_step import PERFORMANCE_EXPORT_KEY
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.testing import RegisteredModels, free_port, start_prometheus, to_records

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
    routers = rendered["scrape_configs"][1]
    assert routers["job_name"] == "churn-routers"
    assert Path(routers["file_sd_configs"][0]["files"][0]).is_file()
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
        "ChurnServingTargetDown",
        "ChurnServingAbsent",
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
        "churn_traffic_weight",
        "churn_feature_psi",
        "churn_model_auc_realized",
        "churn_model_auc_estimated",
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


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label matchers, grouping
    labels, durations and Grafana variables left out)."""
    text = re.sub(r"\$__\w+", "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.groups()
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, model_version) (rate(x_bucket{path="/p"}'
        "[$__rate_interval]))) / scalar(sum(rate(y_total[5m]))) > bool 0.2"
    ) == {"x_bucket", "y_total"}


def _samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample ``url``'s ``/metrics`` exposes: (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _psi_document(home: Path) -> None:
    """The drift sensor's document, as its tick writes it into the storage (CHURN_HOME)."""
    result = drift.PsiResult(
        psi={"monthly_spend": 0.31, "tenure_months": 0.02},
        n_rows=500,
        max_feature="monthly_spend",
        max_psi=0.31,
        unseen_counts={},
        missing_counts={},
    )
    document = home / PSI_EXPORT_KEY
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(psi_export("1", {"source_snapshot": result}, 0.2, 1_700_000_000.0))


def _performance_document(home: Path) -> None:
    """model_performance's document, as the asset writes it into the storage (CHURN_HOME)."""
    entry = {
        "holdout_auc": 0.85,
        "realized_week": "2026-11-15",
        "realized_auc": 0.71,
        "realized_lower": 0.69,
        "realized_upper": 0.73,
        "estimate_week": "2026-12-06",
        "estimated_auc": 0.84,
    }
    document = home / PERFORMANCE_EXPORT_KEY
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(json.dumps({"updated": 1_700_000_500.0, "versions": {"1": entry}}))


@requires_prometheus
def test_every_dashboard_metric_is_exported_and_scraped_by_the_local_prometheus(
    registered_models: RegisteredModels, churn_home: Path, tmp_path: Path
) -> None:
    _psi_document(churn_home)
    _performance_document(churn_home)
    target = LocalProcessTarget(
        churn_home / "deployments",
        registered_models.tracking_uri,
        inference_log_dir=tmp_path / "inference_log",
    )
    try:
        served = target.deploy("production", "1", registered_models.model_uris["1"])
        url = target.set_weights("production", {"1": 100}).endpoint
        assert url is not None
        rows = to_records(registered_models.rows.head(2))
        answer = httpx.post(url + "/predict", json={"records": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        router = _samples(url)
        exported = {name for name, _, _ in router + _samples(served.url)}

        # the local Prometheus finds the router through its own file_sd list
        config = target.write_prometheus_config(tmp_path / "prometheus.yml")
        with start_prometheus(config, tmp_path) as prom:
            queries = (
                'churn_traffic_weight{environment="production"}',
                'churn_feature_psi{environment="production", feature="monthly_spend"}',
                'churn_model_auc_realized{environment="production", model_version="1"}',
            )
            deadline = time.monotonic() + 120
            while True:
                found = [
                    httpx.get(prom.url + "/api/v1/query", params={"query": q}).json()
                    for q in queries
                ]
                assert all(f["status"] == "success" for f in found), found
                if all(f["data"]["result"] for f in found):
                    break
                assert time.monotonic() < deadline, f"never scraped: {prom.log.read_text()[-2000:]}"
                time.sleep(0.5)
        (weight,), (psi,), (realized,) = (f["data"]["result"] for f in found)
        assert float(realized["value"][1]) == 0.71
        assert weight["metric"]["job"] == psi["metric"]["job"] == "churn-routers"
        assert float(weight["value"][1]) == 100.0 and float(psi["value"][1]) == 0.31
    finally:
        target.stop_all()
    assert ("churn_traffic_weight", {"model_version": "1"}, 100.0) in router
    labels = {"feature": "monthly_spend", "window": "source_snapshot", "model_version": "1"}
    assert ("churn_feature_psi", labels, 0.31) in router
    assert ("churn_feature_psi_updated_timestamp_seconds", {}, 1.7e9) in router
    for name, value in (
        ("churn_model_auc_realized", 0.71),
        ("churn_model_auc_realized_upper", 0.73),
        ("churn_model_auc_estimated", 0.84),
        ("churn_model_auc_holdout", 0.85),
    ):
        assert (name, {"model_version": "1"}, value) in router
    assert ("churn_model_performance_updated_timestamp_seconds", {}, 1_700_000_500.0) in router
    named = {(title, name) for title, expr in _expressions() for name in metric_names(expr)}
    assert {name for _, name in named} >= {"churn_feature_psi", "churn_traffic_weight"}
    missing = sorted((title, name) for title, name in named if name not in exported)
    assert not missing, f"panels name metrics nobody exports: {missing}"
