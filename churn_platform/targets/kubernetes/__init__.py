"""The Kubernetes deployment target: ``KubernetesTarget`` composed of a workload part and a
route part (see ``target``, ``workloads``, ``routes``; ``api`` is the shared client), its
``KubernetesSettings`` and the object builders (``objects``).

Names are loaded on first use: ``settings`` and ``objects`` need no Kubernetes client, so
the Dagster resources and the object tests import them without loading ``kubernetes``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from churn_platform.targets.kubernetes.api import KubeApi, KubernetesTargetError, Naming
    from churn_platform.targets.kubernetes.routes import (
        GATEWAY_GROUP,
        GATEWAY_VERSION,
        HTTPROUTE_PLURAL,
        Routes,
        RouteState,
    )
    from churn_platform.targets.kubernetes.settings import KubernetesSettings
    from churn_platform.targets.kubernetes.target import CleanupReport, KubernetesTarget
    from churn_platform.targets.kubernetes.workloads import Workloads

_HOMES = {
    "KubeApi": "api",
    "KubernetesTargetError": "api",
    "Naming": "api",
    "GATEWAY_GROUP": "routes",
    "GATEWAY_VERSION": "routes",
    "HTTPROUTE_PLURAL": "routes",
    "Routes": "routes",
    "RouteState": "routes",
    "KubernetesSettings": "settings",
    "CleanupReport": "target",
    "KubernetesTarget": "target",
    "Workloads": "workloads",
}

__all__ = [
    "GATEWAY_GROUP",
    "GATEWAY_VERSION",
    "HTTPROUTE_PLURAL",
    "CleanupReport",
    "KubeApi",
    "KubernetesSettings",
    "KubernetesTarget",
    "KubernetesTargetError",
    "Naming",
    "RouteState",
    "Routes",
    "Workloads",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its submodule on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
