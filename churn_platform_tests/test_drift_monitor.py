"""The drift episode logic, pure: one run request per episode, per champion."""

from __future__ import annotations

import pytest

from churn_platform import settings
from churn_platform.core.drift import PsiResult
from churn_platform.core.drift_monitor import EpisodeState, decide


def reading(max_psi: float) -> dict[str, PsiResult]:
    psi = {"monthly_spend": max_psi, "region": 0.01}
    return {"source_snapshot": PsiResult(psi, 1000, "monthly_spend", max_psi, {}, {})}


def test_an_episode_requests_once_and_ends_when_psi_falls():
    state = EpisodeState()
    calm = decide(state, "1", reading(0.05), [], 0.2)
    assert not calm.request_run and "max PSI 0.050 <= 0.2" in calm.reason
    start = decide(calm.state, "1", reading(0.9), [], 0.2)
    assert start.request_run and start.run_key == "drift-episode-1"
    again = decide(start.state, "1", reading(0.8), [], 0.2)
    assert not again.request_run and "continues" in again.reason
    over = decide(again.state, "1", reading(0.1), [], 0.2)
    assert not over.state.in_drift
    second = decide(over.state, "1", reading(0.5), [], 0.2)
    assert second.request_run and second.run_key == "drift-episode-2"


def test_a_new_champion_still_drifting_starts_a_new_episode():
    drifting = EpisodeState(episode=3, in_drift=True, champion="1")
    assert decide(drifting, "2", reading(0.6), [], 0.2).run_key == "drift-episode-4"
    assert not decide(drifting, "1", reading(0.6), [], 0.2).request_run


def test_no_window_to_judge_skips_with_the_reasons_and_keeps_the_episode():
    decision = decide(
        EpisodeState(episode=2), "1", {}, ["inference_log: 0 rows, fewer than 200"], 0.2
    )
    assert not decision.request_run and decision.state.episode == 2
    assert "inference_log: 0 rows" in decision.reason


def test_cursor_round_trip_and_bad_cursor_and_settings():
    state = EpisodeState(episode=5, in_drift=True, champion="7")
    assert EpisodeState.parse(state.dumps()) == state
    assert EpisodeState.parse('{"episode": 2, "in_drift": true}').champion is None
    with pytest.raises(ValueError, match="clear it in the UI"):
        EpisodeState.parse("not json")
    assert settings.drift_settings({"CHURN_PSI_THRESHOLD": "0.3"}).threshold == 0.3
    with pytest.raises(ValueError, match="CHURN_PSI_THRESHOLD='lots' is not a number"):
        settings.drift_settings({"CHURN_PSI_THRESHOLD": "lots"})


def test_a_window_lacking_a_champion_feature_is_judged_on_the_rest():
    import numpy as np
    import pandas as pd

    from churn_platform.core import drift
    from churn_platform.core.drift_monitor import judge_windows
    from churn_platform.core.spec import default_spec

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=1_000), "b": rng.choice(["x", "y"], 1_000)})
    profile = drift.build_reference_profile(ref, default_spec(), numeric=["a"], categorical=["b"])
    results, skipped = judge_windows(
        profile, {"source_snapshot": ref[["a"]], "inference_log": ref[["b"]].iloc[:0]}, 200
    )
    assert set(results["source_snapshot"].psi) == {"a"}
    assert skipped == [
        "source_snapshot: lacks champion drift feature(s) ['b'], not judged on them",
        "inference_log: 0 rows, fewer than 200",
    ]
    results, skipped = judge_windows(profile, {"source_snapshot": ref[[]]}, 200)
    assert results == {} and "lacks champion drift feature(s) ['a', 'b']" in skipped[0]


def test_a_tick_reuses_the_cached_source_psi_and_remembers_it_under_the_fingerprint():
    from churn_platform.core.drift_monitor import DriftSettings, judge_tick, run_tags

    cached = reading(0.9)["source_snapshot"]
    decision = judge_tick(
        EpisodeState(), "1", {"features": {}}, {}, [], cached, "fp-1", DriftSettings()
    )
    assert decision.request_run and decision.worst_window == "source_snapshot"
    assert decision.state.cached_source("1", "fp-1") == cached
    assert decision.state.cached_source("1", "fp-2") is None
    assert run_tags(decision, "1") == {
        "churn/trigger": "drift",
        "churn/drift_feature": "monthly_spend",
        "churn/drift_window": "source_snapshot",
        "churn/drift_max_psi": "0.9000",
        "churn/champion_version": "1",
    }


def test_a_tick_without_windows_skips_with_the_unreadable_ones():
    from churn_platform.core.drift_monitor import DriftSettings, judge_tick

    decision = judge_tick(
        EpisodeState(),
        "1",
        {"features": {}},
        {},
        ["source_snapshot: unreadable (x)"],
        None,
        None,
        DriftSettings(),
    )
    assert not decision.request_run
    assert decision.reason == "no window to judge drift on: source_snapshot: unreadable (x)"
    assert decision.state.source_cache is None


def test_the_drift_notice_and_observation_name_the_worst_feature():
    from churn_platform.core.drift_monitor import drift_reason, observation_metadata

    start = decide(EpisodeState(), "1", reading(0.9), [], 0.2)
    assert drift_reason(start, 0.2) == "PSI 0.900 on monthly_spend (source_snapshot) exceeds 0.2"
    meta = observation_metadata("source_snapshot", start.results["source_snapshot"], "1", 0.2)
    assert meta["max_psi"] == 0.9 and meta["psi_region"] == 0.01
    assert meta["max_psi_feature"] == "monthly_spend" and meta["rows"] == 1000
