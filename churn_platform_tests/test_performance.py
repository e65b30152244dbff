"""Realized performance after release: the prediction-outcome join, maturity, the metrics
and the checks of ``core/performance.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from churn_platform.core import performance as perf
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate

WEEK = "2026-11-01"
START, END = perf.week_bounds(WEEK)
DAY = perf.SECONDS_PER_DAY


def known_world(n: int = 4000, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Predictions with noise the join must see through, the outcomes, and the truth:
    the (version, customer, probability, outcome) rows the join must find."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"E{i:06d}" for i in range(n)], dtype=object)
    version = np.where(rng.random(n) < 0.7, "3", "4")
    ts = START + rng.integers(0, 6 * DAY, size=n)
    y = (rng.random(n) < 0.25).astype(int)
    p = np.clip(0.25 + 0.3 * (y - 0.25) + rng.normal(0, 0.2, size=n), 0.001, 0.999).round(3)
    truth = pd.DataFrame({"model_version": version, "entity_id": ids, "p": p, "y": y})
    # final predictions, plus earlier ones of the same customer and version (superseded)
    early = rng.random(n) < 0.4
    frames = [
        pd.DataFrame({"entity_id": ids, "model_version": version, "ts": ts, "probability": p}),
        pd.DataFrame(
            {
                "entity_id": ids[early],
                "model_version": version[early],
                "ts": ts[early] - rng.integers(1, 3600, size=int(early.sum())),
                "probability": rng.random(int(early.sum())),
            }
        ),
        # other weeks and customers without id: never in this week's join
        pd.DataFrame(
            {"entity_id": ids[:50], "model_version": "3", "ts": END + 10, "probability": 0.9}
        ),
        pd.DataFrame(
            {"entity_id": [None] * 7, "model_version": "3", "ts": START + 5, "probability": 0.5}
        ),
    ]
    predictions = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)
    predictions["request_id"] = [f"r{i}" for i in range(len(predictions))]
    known = ts + rng.integers(0, 25 * DAY, size=n)
    outcomes = pd.DataFrame({"entity_id": ids, "outcome": y, "known_ts": known})
    # noise outcomes: one known before the prediction, one after the delay (both ignored)
    noise = pd.DataFrame(
        {
            "entity_id": np.concatenate([ids[:100], ids[:100]]),
            "outcome": np.concatenate([1 - y[:100], 1 - y[:100]]),
            "known_ts": np.concatenate([ts[:100] - 10, ts[:100] + 31 * DAY]),
        }
    )
    # a tenth of the customers never get an outcome: unmatched
    lost = np.zeros(n, dtype=bool)
    lost[-n // 10 :] = True
    truth = truth.loc[~lost]
    outcomes = pd.concat([outcomes.loc[~lost], noise], ignore_index=True)
    return predictions.reset_index(drop=True), outcomes.sample(frac=1.0, random_state=2), truth


MATURE = END + 31 * DAY


def test_join_auc_equals_sklearn_exactly_per_version() -> None:
    predictions, outcomes, truth = known_world()
    week = perf.week_performance(predictions, outcomes, WEEK, MATURE, perf.PerformanceSettings())
    assert week.status == "scored"
    assert week.n_without_id == 7
    assert [v.model_version for v in week.versions] == ["3", "4"]
    for v in week.versions:
        t = truth[truth["model_version"] == v.model_version]
        assert v.n_matched == len(t)
        assert v.auc == roc_auc_score(t["y"], t["p"])  # exactly
        assert v.brier == pytest.approx(brier_score_loss(t["y"], t["p"]), abs=1e-12)
        assert v.n_churners == int(t["y"].sum())
        assert v.auc_lower < v.auc < v.auc_upper
    total = sum(v.n_predictions for v in week.versions)
    assert total == len(truth) + 400  # one per customer; the lost tenth counts, unmatched
    assert sum(v.n_matched for v in week.versions) / total == pytest.approx(0.9)


def test_flipped_outcomes_fail_the_realized_check() -> None:
    predictions, outcomes, truth = known_world()
    settings = perf.PerformanceSettings()
    holdout_auc = roc_auc_score(truth["y"], truth["p"])
    honest = perf.week_performance(predictions, outcomes, WEEK, MATURE, settings)
    flipped = outcomes.assign(outcome=1 - outcomes["outcome"])
    bad = perf.week_performance(predictions, flipped, WEEK, MATURE, settings)
    for v in honest.versions:
        assert perf.realized_auc_check(v, holdout_auc, settings.auc_tolerance).passed
    for v in bad.versions:
        check = perf.realized_auc_check(v, holdout_auc, settings.auc_tolerance)
        assert not check.passed, check.description
        assert "below holdout AUC" in check.description


def test_an_immature_week_is_pending_not_scored() -> None:
    predictions, outcomes, _ = known_world()
    settings = perf.PerformanceSettings(label_delay_days=30)
    due = perf.matures_at(WEEK, 30)
    assert due == END + 30 * DAY
    pending = perf.week_performance(predictions, outcomes, WEEK, due - 1, settings)
    assert pending.status == "pending"
    assert pending.versions == ()
    assert pending.n_logged > 0
    assert not perf.is_mature(WEEK, due - 1, 30)
    scored = perf.week_performance(predictions, outcomes, WEEK, due, settings)
    assert scored.status == "scored" and len(scored.versions) == 2


def test_latest_prediction_per_customer_and_version_wins() -> None:
    predictions = pd.DataFrame(
        {
            "entity_id": ["a", "a", "a", "b"],
            "request_id": ["1", "2", "3", "4"],
            "model_version": ["1", "1", "2", "1"],
            "ts": [START + 10, START + 20, START + 5, START + 7],
            "probability": [0.1, 0.9, 0.4, 0.2],
        }
    )
    outcomes = pd.DataFrame(
        {"entity_id": ["a", "b"], "outcome": [1, 0], "known_ts": [START + 99] * 2}
    )
    rows = perf.join_outcomes(predictions, outcomes, WEEK, 30).rows
    got = sorted(
        zip(
            rows["model_version"],
            rows["entity_id"],
            rows["request_id"],
            rows["outcome"],
            strict=True,
        )
    )
    assert got == [("1", "a", "2", 1), ("1", "b", "4", 0), ("2", "a", "3", 1)]


def test_calibration_error_and_top_decile_against_their_definitions() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p**2).astype(int)  # over-confident: probability p, rate p^2
    ece, bins = perf.reliability_bins(y, p)
    expected = sum(
        (m := (p >= b / 10) & (p < (b + 1) / 10)).sum() / p.size * abs(p[m].mean() - y[m].mean())
        for b in range(10)
    )
    assert ece == pytest.approx(expected, abs=1e-12)
    assert sum(b.n for b in bins) == 5000
    precision, recall = perf.top_share_precision_recall(y, p)
    top = np.argsort(-p)[:500]
    assert precision == pytest.approx(y[top].mean())
    assert recall == pytest.approx(y[top].sum() / y.sum())
    version = perf.VersionPerformance(
        "1", 5000, 5000, 1.0, int(y.sum()), 0.8, 0.78, 0.82, "x", 0.2, ece, bins, 0.5, 0.2
    )
    assert not perf.calibration_check(version, 0.05).passed
    assert perf.calibration_check(version, 0.5).passed
    assert not perf.match_rate_check(
        perf.VersionPerformance(
            "1", 10, 5, 0.5, 1, None, None, None, "", None, None, (), None, None
        ),
        0.8,
    ).passed


def test_slice_aucs_use_the_versions_spec_and_the_logged_features() -> None:
    frame = generate(SyntheticSpec(n_rows=3000, seed=5))
    rng = np.random.default_rng(1)
    p = np.clip(0.3 * frame["churned"] + rng.random(3000) * 0.7, 0, 1)
    predictions = frame.drop(columns=["churned"]).assign(
        entity_id=frame["customer_id"],
        request_id="r",
        model_version="7",
        ts=START + 100,
        probability=p,
    )
    outcomes = pd.DataFrame(
        {"entity_id": frame["customer_id"], "outcome": frame["churned"], "known_ts": START + 200}
    )
    spec = default_spec()
    week = perf.week_performance(
        predictions, outcomes, WEEK, MATURE, perf.PerformanceSettings(), {"7": spec}
    )
    (version,) = week.versions
    by_name = {s.name: s for s in version.slices}
    assert set(by_name) == set(spec.slice_names())
    ent = frame["is_enterprise"].to_numpy(dtype=bool)
    assert by_name["enterprise"].auc == pytest.approx(roc_auc_score(frame["churned"][ent], p[ent]))
    bare = predictions[list(perf.PREDICTION_COLUMNS)]
    (plain,) = perf.week_performance(
        bare, outcomes, WEEK, MATURE, perf.PerformanceSettings(), {"7": spec}
    ).versions
    assert all(s.auc is None and "inference log" in (s.skipped_reason or "") for s in plain.slices)


def test_large_weeks_use_the_delong_interval() -> None:
    predictions, outcomes, truth = known_world()
    week = perf.week_performance(
        predictions, outcomes, WEEK, MATURE, perf.PerformanceSettings(bootstrap_max_rows=100)
    )
    boot = perf.week_performance(predictions, outcomes, WEEK, MATURE, perf.PerformanceSettings())
    for a, b in zip(week.versions, boot.versions, strict=True):
        assert a.interval_method == "DeLong normal interval"
        assert a.auc_lower == pytest.approx(b.auc_lower, abs=0.01)
        assert a.auc_upper == pytest.approx(b.auc_upper, abs=0.01)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (pd.DataFrame({"entity_id": ["a"], "outcome": [1]}), r"lacks columns \['known_ts'\]"),
        (
            pd.DataFrame({"entity_id": ["a"], "outcome": ["Yes"], "known_ts": [1]}),
            "'outcome' must hold 0/1",
        ),
        (pd.DataFrame({"entity_id": ["a"], "outcome": [1], "known_ts": ["soon"]}), "'known_ts'"),
    ],
)
def test_bad_outcomes_name_the_column(frame: pd.DataFrame, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        perf.outcomes_frame(frame)


def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ValueError, match="label_delay_days"):
        perf.PerformanceSettings(label_delay_days=-1)
    with pytest.raises(ValueError, match="min_match_rate"):
        perf.PerformanceSettings(min_match_rate=2.0)


def test_the_grouped_delong_interval_equals_the_textbook_one() -> None:
    from churn_platform.core.metrics import _structural_components

    rng = np.random.default_rng(4)
    y = (rng.random(3000) < 0.3).astype(int)
    p = np.round(0.3 * y + rng.random(3000), 2)  # many ties
    aucs, v_pos, v_neg = _structural_components(y.astype(bool), p[None, :])
    var = np.var(v_pos[0], ddof=1) / v_pos.shape[1] + np.var(v_neg[0], ddof=1) / v_neg.shape[1]
    half = 1.959963984540054 * np.sqrt(var)
    lower, upper = perf.delong_interval(y, p, 0.95)
    assert lower == pytest.approx(aucs[0] - half, abs=1e-12)
    assert upper == pytest.approx(aucs[0] + half, abs=1e-12)
