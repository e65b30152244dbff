"""Gauges the router exports beside its request counter: the configured traffic weights and
the drift sensor's latest PSI per feature.

- ``churn_traffic_weight{model_version}``: the percent of requests the router is configured
  to send to each version (the table of ``PUT /-/weights``), read at scrape time.
- ``churn_feature_psi{feature, window, model_version}``: PSI of each feature in each window
  (``source_snapshot``, ``inference_log``) against the reference profile of the champion
  ``model_version``, as ``psi_drift_sensor`` last computed it. The sensor writes
  ``monitoring/feature_psi.json`` in the storage (``CHURN_STORAGE_URL``, default
  ``CHURN_HOME``); the router reads that document at every scrape, so a restarted router or
  sensor loses nothing.
- ``churn_feature_psi_updated_timestamp_seconds``: when the sensor wrote it (staleness shows:
  ``time() - churn_feature_psi_updated_timestamp_seconds``).

No document (no tick has computed PSI yet) or an unreadable one means no PSI samples; the
scrape itself never fails because of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from churn_platform.core.drift_monitor import PSI_EXPORT_KEY, parse_psi_export
from churn_platform.serving.server_settings import ServerSettings

log = logging.getLogger(__name__)


def default_psi_location(settings: ServerSettings) -> Path:
    """Where the drift sensor writes its PSI document: ``monitoring/feature_psi.json`` in the
    storage (``CHURN_STORAGE_URL``, default ``CHURN_HOME``; AWS variables for ``s3://``)."""
    return settings.storage_root() / PSI_EXPORT_KEY


def read_psi_text(location: Path) -> str | None:
    """The document's text, or None when there is none yet."""
    try:
        return location.read_text()
    except FileNotFoundError:
        return None


class RouterGauges(Collector):
    """A Prometheus collector evaluated at scrape time (nothing to keep in sync).

    ``weights`` returns the router's configured table ``{version: percent}``; ``psi_text``
    returns the drift sensor's document or None.
    """

    def __init__(
        self,
        weights: Callable[[], Mapping[str, int]],
        psi_text: Callable[[], str | None],
    ) -> None:
        self._weights = weights
        self._psi_text = psi_text

    def collect(self) -> Iterator[Metric]:
        """The gauges' current samples."""
        weight = GaugeMetricFamily(
            "churn_traffic_weight",
            "Percent of requests the router is configured to send to the model version.",
            labels=["model_version"],
        )
        for version, percent in sorted(self._weights().items()):
            weight.add_metric([version], float(percent))
        yield weight
        psi = GaugeMetricFamily(
            "churn_feature_psi",
            "PSI of the feature in the window against the champion's reference profile, as "
            "psi_drift_sensor last computed it (> 0.2: drift).",
            labels=["feature", "window", "model_version"],
        )
        updated = GaugeMetricFamily(
            "churn_feature_psi_updated_timestamp_seconds",
            "Unix time psi_drift_sensor last wrote the PSI per feature.",
        )
        try:
            text = self._psi_text()
            at, samples = parse_psi_export(text) if text is not None else (None, [])
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # a half-configured storage must not take the router's metrics down with it
            log.warning("churn_feature_psi: the sensor's PSI document is unreadable: %s", exc)
            at, samples = None, []
        for sample in samples:
            psi.add_metric([sample.feature, sample.window, sample.model_version], sample.psi)
        yield psi
        if at is not None:
            updated.add_metric([], at)
        yield updated
