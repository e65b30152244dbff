"""The HTTP side of a release: integration checks against a served version, synthetic load.

A resource, so the deployment assets never reach into ``serving`` themselves and a test
can swap what probes the servers. Requests hold the columns of the probed model's own spec
(read from its MLmodel metadata through ``model_uri``), not the current spec's.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.release import StagingChecks
from churn_platform.core.spec import Spec
from churn_platform.resources.mlflow_registry import _fluent_store
from churn_platform.serving import integration
from churn_platform.serving.model_server.loading import model_requirements, model_spec
from churn_platform.serving.traffic import TrafficGenerator


class ReleaseProbes(dg.ConfigurableResource):
    """Probes a model server over HTTP: the staging checks and the local canary's load."""

    def model_spec(self, model_uri: str, tracking_uri: str) -> Spec:
        """The spec ``model_uri`` was logged with (the default spec for a model without one),
        read from the MLflow store at ``tracking_uri`` without repointing the process's MLflow."""
        with _fluent_store(tracking_uri):
            return model_spec(model_uri)

    def model_environment(
        self, model_uri: str, tracking_uri: str
    ) -> tuple[dict[str, str], str | None]:
        """The package pins and Python ``model_uri`` was logged with (read from the store
        at ``tracking_uri``)."""
        with _fluent_store(tracking_uri):
            return model_requirements(model_uri)

    def integration_checks(
        self,
        url: str,
        rows: pd.DataFrame,
        offline: np.ndarray,
        bounds: StagingChecks,
        spec: Spec,
        environment: tuple[dict[str, str], str | None] = ({}, None),
    ) -> list[CheckOutcome]:
        """Health, environment parity, API contract, latency and online/offline parity of
        the server at ``url``.

        ``offline`` holds the offline pipeline's probabilities for ``rows``; requests hold
        ``spec``'s features (the served model's spec); ``environment`` is the model's
        pins and Python (``model_environment``).
        """
        return [
            integration.health_check(url),
            integration.environment_parity_check(url, *environment),
            integration.api_contract_check(url, rows, spec=spec),
            integration.latency_check(
                url, rows, bounds.latency_requests, bounds.latency_p95_ms, spec=spec
            ),
            integration.parity_check(url, rows, offline, spec=spec),
        ]

    def synthetic_traffic(
        self, endpoint: str, rows: pd.DataFrame, rate: float, spec: Spec
    ) -> TrafficGenerator:
        """A context manager sending ``rate`` requests/s of ``rows`` (cycling) to ``endpoint``
        while open, each holding ``spec``'s features (the candidate's spec).

        Only loopback endpoints are accepted (it is demo load for a laptop canary).
        """
        return TrafficGenerator(endpoint, integration.records(rows, spec), rate=rate)
