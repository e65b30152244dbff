"""The local deployment target as a Dagster resource (a thin wrapper: the logic is in
``serving.local_target``)."""

from __future__ import annotations

from churn_platform.resources.bases import DeploymentResource
from churn_platform.serving.local_target import LocalProcessTarget


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
