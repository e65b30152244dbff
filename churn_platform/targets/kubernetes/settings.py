"""``KubernetesSettings``: everything that configures a ``KubernetesTarget``, declared once.

Each field carries its default and a description (``metadata["description"]``); the Dagster
resource (``resources/deployment_target.py``) takes both from here, and
``churn_platform.settings.kubernetes_settings_from_env`` fills it from the environment
variables the Helm values set. An empty string means "not given" for the optional texts
(``kubeconfig``, ``kube_context``, ``gateway_namespace``, ``endpoint``), as in the resource.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from churn_platform.settings import MODEL_NAME
from churn_platform.targets.kubernetes import objects as k8s

__all__ = ["KubernetesSettings", "describe"]


def _setting(default: Any, description: str) -> Any:
    """A dataclass field with its default and the description the Dagster UI shows."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"description": description})
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class KubernetesSettings:
    """How and where ``KubernetesTarget`` runs model versions (see each field's description)."""

    image: str = _setting("", "the model-server image (deploy/docker/model-server.Dockerfile)")
    tracking_uri: str = _setting(
        "", "MLFLOW_TRACKING_URI inside the pods, where models:/ URIs resolve (a server URL)"
    )
    namespace: str = _setting(
        "churn-{environment}",
        "namespace of an environment's objects ({environment} is replaced); a namespace "
        "shared by several environments puts the environment into object names",
    )
    gateway_name: str = _setting("churn-gateway", "the Gateway the HTTPRoute attaches to")
    gateway_namespace: str = _setting("", "the Gateway's namespace ('' = the route's own)")
    kubeconfig: str = _setting("", "kubeconfig file outside a cluster ('' = the default file)")
    kube_context: str = _setting("", "kubeconfig context ('' = the file's current context)")
    in_cluster: bool = _setting(False, "use the pod's service account (inside a Dagster run pod)")
    model_name: str = _setting(MODEL_NAME, "registered model name, a label on every object")
    replicas: int = _setting(1, "pods per model version")
    cpu_request: str = _setting("250m", "CPU request of a model-server container")
    cpu_limit: str = _setting("1", "CPU limit of a model-server container")
    memory_request: str = _setting("512Mi", "memory request of a model-server container")
    memory_limit: str = _setting("1Gi", "memory limit of a model-server container")
    extra_env: Mapping[str, str] = _setting(
        {}, "more environment variables for the model servers (e.g. CHURN_STORAGE_URL)"
    )
    image_pull_policy: str = _setting("IfNotPresent", "Always, IfNotPresent or Never")
    service_account: str = _setting("", "the pods' service account ('' = namespace default)")
    storage_secret: str = _setting(
        "",
        "Secret whose AWS_* keys the servers read to write inference logs to the object "
        "store ('' = none: local storage or a workload identity)",
    )
    endpoint: str = _setting(
        "", "the URL users call per environment ({environment} replaced; '' = not reported)"
    )
    hostnames: tuple[str, ...] = _setting((), "the HTTPRoute's hostnames (none: any host)")
    cluster_domain: str = _setting("cluster.local", "DNS domain of the Services' URLs")
    keep_previous_seconds: float = _setting(
        3600.0, "how long the N-1 version keeps its pods after losing its traffic"
    )
    ready_timeout_seconds: float = _setting(600.0, "how long deploy waits for ready replicas")
    poll_seconds: float = _setting(2.0, "pause between readiness polls")
    request_timeout_seconds: float = _setting(30.0, "timeout of one API request")
    max_attempts: int = _setting(5, "attempts per API call on 5xx, 429, timeouts, connection")
    backoff_seconds: float = _setting(0.5, "first retry pause (doubled per attempt)")
    max_backoff_seconds: float = _setting(8.0, "longest retry pause")
    max_conflict_retries: int = _setting(5, "re-read-and-retry rounds on 409 Conflict")

    def __post_init__(self) -> None:
        if self.keep_previous_seconds < 0:
            raise ValueError(
                "KubernetesSettings.keep_previous_seconds must be >= 0, got "
                f"{self.keep_previous_seconds}"
            )
        # a list from Dagster config or YAML, kept hashable and immutable here
        object.__setattr__(self, "hostnames", tuple(self.hostnames))

    def serving_spec(self) -> k8s.ServingSpec:
        """The Deployment-shaping part (image, store, resources, pod identity)."""
        if not self.image:
            raise ValueError(
                "KubernetesSettings.image is empty; give the model-server image reference "
                "(CHURN_MODEL_SERVER_IMAGE in the Helm values)"
            )
        if not self.tracking_uri:
            # The local SQLite default means nothing inside a pod: insist on a server URL.
            raise ValueError(
                "KubernetesSettings.tracking_uri is empty; give the MLflow tracking server URL "
                "the model-server pods should use (MLFLOW_TRACKING_URI)"
            )
        return k8s.ServingSpec(
            image=self.image,
            tracking_uri=self.tracking_uri,
            model_name=self.model_name,
            replicas=self.replicas,
            cpu_request=self.cpu_request,
            cpu_limit=self.cpu_limit,
            memory_request=self.memory_request,
            memory_limit=self.memory_limit,
            extra_env=dict(self.extra_env),
            image_pull_policy=self.image_pull_policy,
            service_account=self.service_account,
            storage_secret=self.storage_secret,
        )


def describe(name: str) -> tuple[Any, str]:
    """(default, description) of the field ``name`` (for configuration UIs)."""
    f = KubernetesSettings.__dataclass_fields__[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory(), f.metadata["description"]
    return f.default, f.metadata["description"]
