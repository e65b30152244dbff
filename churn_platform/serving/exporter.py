"""The router's gauges for a cluster: ``churn_traffic_weight`` and ``churn_feature_psi``.

Locally each router exports them (``serving/monitoring.py``). On Kubernetes the Gateway's
HTTPRoute splits the traffic and there is no router, so ``python -m churn_platform.serving
exporter`` serves the same collector on its own ``/metrics``: the weights read from the
HTTPRoute (``KubernetesTarget.state``) and the PSI from the drift sensor's document in the
storage. ``deploy/k8s/exporter/deployment.yaml`` runs it in the code location's image and
service account; the cluster's Prometheus scrapes it as job ``churn-exporter``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, make_asgi_app

from churn_platform.serving.monitoring import RouterGauges
from churn_platform.serving.performance_gauges import PerformanceGauges

log = logging.getLogger(__name__)


def guarded_weights(weights: Callable[[], Mapping[str, int]]) -> Callable[[], Mapping[str, int]]:
    """``weights`` that answers nothing (and says why in the log) when the API cannot be
    read: the PSI gauges must still be scraped."""

    def read() -> Mapping[str, int]:
        try:
            return weights()
        except Exception as exc:  # noqa: BLE001 - the Kubernetes client raises many kinds
            log.warning("churn_traffic_weight: the route's weights are unreadable: %s", exc)
            return {}

    return read


def exporter_app(
    weights: Callable[[], Mapping[str, int]],
    psi_text: Callable[[], str | None],
    performance_text: Callable[[], str | None] | None = None,
) -> Any:
    """An ASGI app serving the gauges (and only them) on every path, ``/metrics`` included;
    ``performance_text`` adds the realized / estimated AUC per version
    (``serving/performance_gauges.py``)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RouterGauges(guarded_weights(weights), psi_text))
    if performance_text is not None:
        registry.register(PerformanceGauges(performance_text))
    return make_asgi_app(registry)
