"""The HTTP side of a release: integration checks against a served version, synthetic load.

A resource, so the deployment assets never reach into ``serving`` themselves and a test
can swap what probes the servers.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.release import StagingChecks
from churn_platform.serving import integration
from churn_platform.serving.traffic import TrafficGenerator


class ReleaseProbes(dg.ConfigurableResource):
    """Probes a model server over HTTP: the staging checks and the local canary's load."""

    def integration_checks(
        self, url: str, rows: pd.DataFrame, offline: np.ndarray, bounds: StagingChecks
    ) -> list[CheckOutcome]:
        """Health, API contract, latency and online/offline parity of the server at ``url``.

        ``offline`` holds the offline pipeline's probabilities for ``rows``.
        """
        return [
            integration.health_check(url),
            integration.api_contract_check(url, rows),
            integration.latency_check(url, rows, bounds.latency_requests, bounds.latency_p95_ms),
            integration.parity_check(url, rows, offline),
        ]

    def synthetic_traffic(self, endpoint: str, rows: pd.DataFrame, rate: float) -> TrafficGenerator:
        """A context manager sending ``rate`` requests/s of ``rows`` (cycling) to ``endpoint``
        while open.

        Only loopback endpoints are accepted (it is demo load for a laptop canary).
        """
        return TrafficGenerator(endpoint, integration.records(rows), rate=rate)
