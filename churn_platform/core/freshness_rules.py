"""Freshness: how old an asset's newest materialisation may be before it warns and fails.

The snapshot is read weekly (warn after 8 days, fail after 15); the champion is the model
the newest release put in production (warn after 335 days, fail after a year). Dagster shows
the policies (``dg.FreshnessPolicy.time_window``) and their state in the UI; the platform's
``freshness_notification`` sensor judges the same windows with ``freshness_state`` and tells
people once per asset that fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PASS, WARN, FAIL, UNKNOWN = "PASS", "WARN", "FAIL", "UNKNOWN"
DAY = 86_400.0


@dataclass(frozen=True)
class FreshnessSettings:
    """The windows, in days (``CHURN_*_WARN_DAYS`` / ``CHURN_*_FAIL_DAYS``).

    snapshot_warn_days: churn_snapshot warns when its newest materialisation is older
    snapshot_fail_days: churn_snapshot fails (and notifies) when older
    champion_warn_days: production_deployment (the release that made the champion) warns
    champion_fail_days: production_deployment fails (and notifies)
    """

    snapshot_warn_days: float = 8.0
    snapshot_fail_days: float = 15.0
    champion_warn_days: float = 335.0
    champion_fail_days: float = 365.0

    def problems(self) -> list[str]:
        """What is inconsistent (a warning window must be shorter than its failure window)."""
        return [
            f"{what}: warn after {warn:g} days must be less than fail after {fail:g}"
            for what, warn, fail in (
                ("snapshot", self.snapshot_warn_days, self.snapshot_fail_days),
                ("champion", self.champion_warn_days, self.champion_fail_days),
            )
            if warn >= fail
        ]


def freshness_state(
    last_update: float | None, now: float, warn_seconds: float | None, fail_seconds: float
) -> str:
    """``PASS``, ``WARN`` or ``FAIL`` by the age of the newest update; ``UNKNOWN`` without one
    (the same rule as Dagster's time-window policy)."""
    if last_update is None:
        return UNKNOWN
    age = now - last_update
    if age > fail_seconds:
        return FAIL
    if warn_seconds is not None and age > warn_seconds:
        return WARN
    return PASS


def parse_states(cursor: str | None) -> dict[str, str]:
    """The states the last tick saw, per asset (the sensor's cursor)."""
    return dict(json.loads(cursor)) if cursor else {}
