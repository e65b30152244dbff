"""The performance trigger's episode rule and the export it reads (``core/performance_step.py``)."""

from __future__ import annotations

import json

import pytest

from churn_platform.core import performance_step as step


def export(**entry: object) -> str:
    return json.dumps({"updated": 1.0, "versions": {"3": {"holdout_auc": 0.85, **entry}}})


def test_the_estimate_trigger_fires_once_per_episode_and_resets_on_recovery() -> None:
    settings = step.MonitorSettings(trigger="estimate")
    low = export(estimated_auc=0.80, estimate_week="2026-11-22")
    first = step.judge_trigger(low, "3", settings, None)
    assert first.request_run and first.run_key == "performance-v3-episode-1"
    assert first.tags["churn/performance_measure"] == "estimate"
    assert first.tags["churn/performance_week"] == "2026-11-22"
    again = step.judge_trigger(low, "3", settings, first.cursor)
    assert not again.request_run and "already requested" in again.reason
    ok = step.judge_trigger(export(estimated_auc=0.84), "3", settings, again.cursor)
    assert not ok.request_run
    assert step.judge_trigger(low, "3", settings, ok.cursor).run_key == "performance-v3-episode-2"


def test_the_realized_trigger_reads_the_intervals_upper_end() -> None:
    settings = step.MonitorSettings()  # realized, tolerance 0.02
    # point below the floor but the interval reaches it: not significant
    wide = export(realized_auc=0.81, realized_upper=0.835, realized_week="2026-11-15")
    assert not step.judge_trigger(wide, "3", settings, None).request_run
    narrow = export(realized_auc=0.81, realized_upper=0.82, realized_week="2026-11-15")
    assert step.judge_trigger(narrow, "3", settings, None).request_run
    # a new champion is judged on its own figures: version 4 has none yet
    assert "no performance figures" in step.judge_trigger(narrow, "4", settings, None).reason


def test_bad_monitor_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="trigger"):
        step.MonitorSettings(trigger="vibes")
    with pytest.raises(ValueError, match="start_date"):
        step.MonitorSettings(start_date="soon")
