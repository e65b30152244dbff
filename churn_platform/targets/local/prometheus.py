"""Prometheus file_sd for the local target: the running model servers and routers.

``<state_dir>/prometheus/targets.json`` lists every running model server and
``routers.json`` beside it every running router, each labelled with its environment;
``deploy/local/prometheus.yml`` (rendered by ``render_prometheus_config``) discovers both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from churn_platform.targets.local.process import PROJECT_ROOT, is_running
from churn_platform.targets.local.state import StateStore, write_json

PROMETHEUS_TEMPLATE = PROJECT_ROOT / "deploy" / "local" / "prometheus.yml"
# The cluster's alert rules, loaded by the local Prometheus too (same metric names).
ALERT_RULES = PROJECT_ROOT / "deploy" / "k8s" / "prometheus" / "churn-alerts.rules.yml"


def router_targets_file(targets_file: Path) -> Path:
    """The file_sd JSON of the running routers, beside the model servers' ``targets_file``
    (the routers export the traffic split, the configured weights and the drift sensor's PSI)."""
    return targets_file.with_name("routers.json")


def render_prometheus_config(
    targets_file: Path,
    scrape_interval: str = "1s",
    template: Path = PROMETHEUS_TEMPLATE,
    rules_file: Path = ALERT_RULES,
) -> str:
    """``deploy/local/prometheus.yml`` with its placeholders filled in."""
    text = template.read_text()
    return (
        text.replace("__ROUTER_TARGETS_FILE__", str(router_targets_file(targets_file)))
        .replace("__TARGETS_FILE__", str(targets_file))
        .replace("__SCRAPE_INTERVAL__", scrape_interval)
        .replace("__RULES_FILE__", str(rules_file))
    )


class FileSdTargets:
    """Renders the file_sd listings from the state files of ``store``."""

    def __init__(self, store: StateStore, host: str) -> None:
        self.store = store
        self.host = host

    @property
    def targets_file(self) -> Path:
        """The Prometheus file_sd JSON listing every running model server."""
        return self.store.state_dir / "prometheus" / "targets.json"

    def write(self) -> None:
        """Rewrite both listings from what runs now."""
        groups: list[dict[str, Any]] = []
        routers: list[dict[str, Any]] = []
        for env in self.store.environments():
            state = self.store.read(env)
            targets = [
                f"{self.host}:{rec['port']}"
                for rec in state["versions"].values()
                if is_running(rec.get("pid"))
            ]
            if targets:
                groups.append({"targets": sorted(targets), "labels": {"environment": env}})
            router = state.get("router")
            if router and is_running(router.get("pid")):
                routers.append(
                    {"targets": [f"{self.host}:{router['port']}"], "labels": {"environment": env}}
                )
        write_json(self.targets_file, groups)
        write_json(router_targets_file(self.targets_file), routers)

    def write_config(self, path: str | Path, scrape_interval: str = "1s") -> Path:
        """Write a Prometheus config that discovers the servers through ``targets_file``
        (the listings are created empty when missing)."""
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        for listing in (self.targets_file, router_targets_file(self.targets_file)):
            if not listing.exists():
                write_json(listing, [])
        out = Path(path)
        out.write_text(render_prometheus_config(self.targets_file, scrape_interval))
        return out
