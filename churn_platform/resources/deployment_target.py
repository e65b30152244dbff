"""The deployment targets as Dagster resources: thin wrappers that hold configuration and
build a ``churn_platform.targets`` object (the logic lives there, free of Dagster).

``CHURN_ENV=local`` uses ``LocalDeploymentResource``, ``CHURN_ENV=kubernetes``
``KubernetesDeploymentResource``; the assets are typed against ``DeploymentResource``.
Nothing here reads the environment: ``resources.environments`` fills the fields
(``settings.kubernetes_settings_from_env`` for Kubernetes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic

from churn_platform.resources.bases import DeploymentResource
from churn_platform.targets.local import LocalProcessTarget

if TYPE_CHECKING:
    from churn_platform.targets.kubernetes import KubernetesSettings, KubernetesTarget

__all__ = ["KubernetesDeploymentResource", "LocalDeploymentResource"]


class LocalDeploymentResource(DeploymentResource):
    """Model versions as processes on 127.0.0.1 behind a weighted router per environment.

    ``state_dir`` is the model's deployment folder (``$CHURN_HOME/deployments`` for the
    default model); a router port of 0 picks a free port once and keeps it. ``tracking_uri`` is the store the servers load their
    models from (empty: the servers' inherited ``MLFLOW_TRACKING_URI`` or its default).
    """

    state_dir: str
    tracking_uri: str = ""
    staging_router_port: int = 0
    production_router_port: int = 0
    inference_log_dir: str = ""
    health_timeout_seconds: float = 90.0

    def target(self) -> LocalProcessTarget:
        """The ``DeploymentTarget`` this resource configures."""
        return LocalProcessTarget(
            self.state_dir,
            self.tracking_uri or None,
            router_ports={
                "staging": self.staging_router_port,
                "production": self.production_router_port,
            },
            inference_log_dir=self.inference_log_dir or None,
            health_timeout_seconds=self.health_timeout_seconds,
        )


def _setting(name: str, *, required: bool = False) -> Any:
    """A resource field with the default and description of ``KubernetesSettings.<name>``."""
    # imported here: the local default never loads the kubernetes client
    from churn_platform.targets.kubernetes.settings import describe

    default, description = describe(name)
    if required:
        return pydantic.Field(description=description)
    if isinstance(default, tuple):  # Dagster config has lists, not tuples
        default = list(default)
    return pydantic.Field(default=default, description=description)


class KubernetesDeploymentResource(DeploymentResource):
    """The Kubernetes deployment target as a Dagster resource (``CHURN_ENV=kubernetes``).

    ``target()`` returns a ``KubernetesTarget``. In a Dagster run pod set
    ``in_cluster=True`` (the pod's service account needs get/list/create/update/patch/
    delete on deployments, services and httproutes in the serving namespaces; see
    ``deploy/k8s/rbac.yaml``); outside a cluster ``kubeconfig`` ('' = default file).
    Each field's default and description come from ``KubernetesSettings``.
    """

    namespace: str = _setting("namespace")
    image: str = _setting("image", required=True)
    gateway_name: str = _setting("gateway_name")
    gateway_namespace: str = _setting("gateway_namespace")
    tracking_uri: str = _setting("tracking_uri")
    model_name: str = _setting("model_name")
    kubeconfig: str = _setting("kubeconfig")
    kube_context: str = _setting("kube_context")
    in_cluster: bool = _setting("in_cluster")
    replicas: int = _setting("replicas")
    keep_previous_seconds: float = _setting("keep_previous_seconds")
    ready_timeout_seconds: float = _setting("ready_timeout_seconds")
    endpoint: str = _setting("endpoint")
    hostnames: list[str] = _setting("hostnames")
    image_pull_policy: str = _setting("image_pull_policy")
    service_account: str = _setting("service_account")
    extra_env: dict[str, str] = _setting("extra_env")
    storage_secret: str = _setting("storage_secret")

    @classmethod
    def from_settings(
        cls, settings: KubernetesSettings, **overrides: Any
    ) -> KubernetesDeploymentResource:
        """The resource holding ``settings`` (the fields it exposes; the rest keep their
        defaults), with ``overrides`` (field name -> value) on top, e.g. ``model_name``."""
        values = {name: _config_value(getattr(settings, name)) for name in cls.model_fields}
        return cls(**{**values, **overrides})

    def settings(self) -> KubernetesSettings:
        """The ``KubernetesSettings`` these fields configure."""
        from churn_platform.targets.kubernetes import KubernetesSettings

        return KubernetesSettings(**{name: getattr(self, name) for name in type(self).model_fields})

    def target(self) -> KubernetesTarget:
        """A ``KubernetesTarget`` configured from this resource's fields."""
        # imported here: the local default never loads the kubernetes client
        from churn_platform.targets.kubernetes import KubernetesTarget

        return KubernetesTarget(self.settings())


def _config_value(value: Any) -> Any:
    """A settings value as Dagster config holds it (lists and dicts, not tuples/mappings)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return dict(value)
    return value
