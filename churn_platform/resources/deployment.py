"""The deployment targets as Dagster resources: thin wrappers that read configuration and
build a ``churn_platform.targets`` object (the logic lives there, free of Dagster).

``CHURN_ENV=local`` uses ``LocalDeploymentResource``, ``CHURN_ENV=kubernetes``
``KubernetesDeploymentResource``; the assets are typed against ``DeploymentResource``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import dagster as dg

from churn_platform import settings
from churn_platform.resources.bases import DeploymentResource
from churn_platform.targets.local import LocalProcessTarget

if TYPE_CHECKING:
    from churn_platform.targets.kubernetes import KubernetesTarget

__all__ = ["KubernetesDeploymentResource", "LocalDeploymentResource"]


class LocalDeploymentResource(DeploymentResource):
    """Model versions as processes on 127.0.0.1 behind a weighted router per environment.

    ``state_dir`` defaults to ``$CHURN_HOME/deployments``; a router port of 0 picks a
    free port once and keeps it. ``tracking_uri`` defaults to the servers' inherited
    ``MLFLOW_TRACKING_URI`` (``settings.default_mlflow_uri()`` when empty).
    """

    state_dir: str = ""
    tracking_uri: str = ""
    staging_router_port: int = 0
    production_router_port: int = 0
    inference_log_dir: str = ""
    health_timeout_seconds: float = 90.0

    def target(self) -> LocalProcessTarget:
        """The ``DeploymentTarget`` this resource configures."""
        from churn_platform.settings import default_mlflow_uri

        return LocalProcessTarget(
            self.state_dir or None,
            self.tracking_uri or default_mlflow_uri(),
            router_ports={
                "staging": self.staging_router_port,
                "production": self.production_router_port,
            },
            inference_log_dir=self.inference_log_dir or None,
            health_timeout_seconds=self.health_timeout_seconds,
        )


class KubernetesDeploymentResource(DeploymentResource):
    """The Kubernetes deployment target as a Dagster resource (``CHURN_ENV=kubernetes``).

    ``target()`` returns a ``KubernetesTarget``. In a Dagster run pod set
    ``in_cluster=True`` (the pod's service account needs get/list/create/update/patch/
    delete on deployments, services and httproutes in the serving namespaces; see
    ``deploy/k8s/rbac.yaml``); outside a cluster ``kubeconfig`` ('' = default file).
    """

    namespace: str = "churn-{environment}"
    image: str
    gateway_name: str = "churn-gateway"
    gateway_namespace: str = ""
    tracking_uri: str = ""
    kubeconfig: str = ""
    kube_context: str = ""
    in_cluster: bool = False
    replicas: int = 1
    keep_previous_seconds: float = 3600.0
    ready_timeout_seconds: float = 600.0
    endpoint: str = ""
    hostnames: list[str] = []
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""

    @classmethod
    def from_env(cls) -> KubernetesDeploymentResource:
        """The resource configured by the environment variables the Helm values set.

        ``CHURN_MODEL_SERVER_IMAGE`` (required, resolved at run time), ``CHURN_K8S_NAMESPACE``,
        ``CHURN_GATEWAY_NAME``, ``CHURN_GATEWAY_NAMESPACE``, ``MLFLOW_TRACKING_URI``; inside a
        pod (``KUBERNETES_SERVICE_HOST`` set) the in-cluster service account is used.
        """
        return cls(
            image=dg.EnvVar("CHURN_MODEL_SERVER_IMAGE"),
            namespace=settings.get("CHURN_K8S_NAMESPACE"),
            gateway_name=settings.get("CHURN_GATEWAY_NAME"),
            gateway_namespace=settings.get("CHURN_GATEWAY_NAMESPACE"),
            tracking_uri=settings.get("MLFLOW_TRACKING_URI") or "",
            # Kubernetes' own variable inside every pod, not a platform setting
            in_cluster=bool(os.environ.get("KUBERNETES_SERVICE_HOST")),
        )

    def _tracking_uri(self) -> str:
        uri = self.tracking_uri or settings.get("MLFLOW_TRACKING_URI") or ""
        if not uri:
            # The local SQLite default means nothing inside a pod: insist on a server URL.
            raise ValueError(
                "KubernetesDeploymentResource.tracking_uri is empty and MLFLOW_TRACKING_URI is "
                "unset; give the MLflow tracking server URL the model-server pods should use"
            )
        return uri

    def target(self) -> KubernetesTarget:
        """A ``KubernetesTarget`` configured from this resource's fields."""
        # imported here: the local default never loads the kubernetes client
        from churn_platform.targets.kubernetes import KubernetesTarget

        return KubernetesTarget(
            kubeconfig=self.kubeconfig or None,
            kube_context=self.kube_context or None,
            in_cluster=self.in_cluster,
            namespace=self.namespace,
            image=self.image,
            gateway_name=self.gateway_name,
            gateway_namespace=self.gateway_namespace or None,
            tracking_uri=self._tracking_uri(),
            replicas=self.replicas,
            keep_previous_seconds=self.keep_previous_seconds,
            ready_timeout_seconds=self.ready_timeout_seconds,
            endpoint=self.endpoint or None,
            hostnames=tuple(self.hostnames),
            image_pull_policy=self.image_pull_policy,
            service_account=self.service_account,
            # servers write their inference logs where the drift sensor reads them
            extra_env=_storage_env(),
            storage_secret=STORAGE_SECRET if settings.storage_is_remote() else "",
        )


# the Secret with the bucket's credentials in each serving namespace (deploy/k8s/storage.yaml)
STORAGE_SECRET = "churn-object-store"


def _storage_env() -> dict[str, str]:
    """``CHURN_STORAGE_URL`` for model-server pods when artefacts go to an object store."""
    if not settings.storage_is_remote():
        return {}
    return {settings.STORAGE_VAR: settings.storage_url()}
