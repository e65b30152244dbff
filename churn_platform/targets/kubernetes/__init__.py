"""The Kubernetes deployment target: ``KubernetesTarget`` composed of a workload part and a
route part (see ``target``, ``workloads``, ``routes``; ``api`` is the shared client)."""

from churn_platform.targets.kubernetes.api import KubeApi, KubernetesTargetError, Naming
from churn_platform.targets.kubernetes.routes import (
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    HTTPROUTE_PLURAL,
    Routes,
    RouteState,
)
from churn_platform.targets.kubernetes.target import CleanupReport, KubernetesTarget
from churn_platform.targets.kubernetes.workloads import Workloads

__all__ = [
    "GATEWAY_GROUP",
    "GATEWAY_VERSION",
    "HTTPROUTE_PLURAL",
    "CleanupReport",
    "KubeApi",
    "KubernetesTarget",
    "KubernetesTargetError",
    "Naming",
    "RouteState",
    "Routes",
    "Workloads",
]
