"""Gauges of each served version's real performance, read at scrape time from the document
``model_performance`` writes (``monitoring/model_performance.json`` beside the PSI document
in the storage; ``core.performance_step.export_week``).

- ``churn_model_auc_realized{model_version}``: AUC on the newest matured prediction week.
- ``churn_model_auc_realized_upper{model_version}``: the upper end of its interval (the
  alert compares it with the holdout AUC: a drop the evidence shows).
- ``churn_model_auc_estimated{model_version}``: the CBPE estimate on the newest week
  (blind to concept drift).
- ``churn_model_auc_holdout{model_version}``: the AUC the version had on its holdout.
- ``churn_model_performance_updated_timestamp_seconds``: when the document was written.

No document, or an unreadable one, means no samples; the scrape never fails because of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The document's name beside the PSI document (same folder in the storage).
PERFORMANCE_DOCUMENT = "model_performance.json"

log = logging.getLogger(__name__)

_GAUGES = (
    ("churn_model_auc_realized", "realized_auc", "AUC of the version on its newest matured week."),
    (
        "churn_model_auc_realized_upper",
        "realized_upper",
        "Upper end of the realized AUC's interval on the newest matured week.",
    ),
    (
        "churn_model_auc_estimated",
        "estimated_auc",
        "CBPE estimate of the version's AUC on its newest week (blind to concept drift).",
    ),
    ("churn_model_auc_holdout", "holdout_auc", "AUC of the version on its training holdout."),
)


def performance_location(psi_location: Path) -> Path:
    """The performance document beside the PSI document ``psi_location``."""
    return psi_location.parent / PERFORMANCE_DOCUMENT


def read_text(location: Path) -> str | None:
    """The document's text, or None when there is none yet."""
    try:
        return location.read_text()
    except FileNotFoundError:
        return None


class PerformanceGauges(Collector):
    """The realized / estimated / holdout AUC per version, evaluated at scrape time."""

    def __init__(self, text: Callable[[], str | None]) -> None:
        self._text = text

    def collect(self) -> Iterator[Metric]:
        """The gauges' current samples."""
        try:
            raw = self._text()
            document = json.loads(raw) if raw else {}
            versions = dict(document.get("versions") or {})
            updated = document.get("updated")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("model performance document unreadable: %s", exc)
            versions, updated = {}, None
        for name, key, text in _GAUGES:
            gauge = GaugeMetricFamily(name, text, labels=["model_version"])
            for version, entry in sorted(versions.items()):
                value = entry.get(key) if isinstance(entry, dict) else None
                if isinstance(value, int | float):
                    gauge.add_metric([str(version)], float(value))
            yield gauge
        stamp = GaugeMetricFamily(
            "churn_model_performance_updated_timestamp_seconds",
            "Unix time model_performance last wrote the performance per version.",
        )
        if isinstance(updated, int | float):
            stamp.add_metric([], float(updated))
        yield stamp
