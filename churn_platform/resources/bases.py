"""Base classes the assets are typed against, so one environment switch swaps implementations."""

from __future__ import annotations

import dagster as dg

from churn_platform.core.rollout import DeploymentTarget


class DeploymentResource(dg.ConfigurableResource):
    """Where model versions run: local processes or Kubernetes. Subclasses build the target."""

    def target(self) -> DeploymentTarget:
        """The ``DeploymentTarget`` this resource configures."""
        raise NotImplementedError(f"{type(self).__name__} must implement target()")
