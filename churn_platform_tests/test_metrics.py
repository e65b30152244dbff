"""AUC, bootstrap intervals, the paired comparison, DeLong, and slices."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

from churn_platform.core import metrics, slices
from churn_platform.core import schema as s
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate


def binormal(n: int, true_auc: float, prevalence: float, seed: int) -> tuple[np.ndarray, ...]:
    """Labels and scores whose population AUC is exactly ``true_auc`` (unit-variance binormal)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    mu = math.sqrt(2.0) * stats.norm.ppf(true_auc)
    return y, mu * y + rng.normal(size=n)


def slow_delong(y: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[float, float, float]:
    """DeLong 1988 straight from the definition: O(n_pos * n_neg) placement values."""
    y = y.astype(bool)
    comps = []
    for x in (x1, x2):
        pos, neg = x[y], x[~y]
        kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((kernel.mean(), kernel.mean(axis=1), kernel.mean(axis=0)))
    (a1, v10_1, v01_1), (a2, v10_2, v01_2) = comps
    s10 = np.cov(np.vstack([v10_1, v10_2]))
    s01 = np.cov(np.vstack([v01_1, v01_2]))
    c = np.array([1.0, -1.0])
    var = c @ s10 @ c / y.sum() + c @ s01 @ c / (~y).sum()
    return a1, a2, var


# ---------------------------------------------------------------------------------------
# auc


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=2, max_size=60),
    data=st.data(),
)
def test_auc_equals_sklearn_with_ties(labels, data):
    y = np.array(labels)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    # few distinct values force many ties, within and across classes
    scores = np.array(data.draw(st.lists(st.integers(0, 4), min_size=y.size, max_size=y.size)))
    assert metrics.auc(y, scores / 4.0) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_auc_equals_sklearn_on_large_continuous_and_rounded_scores():
    y, x = binormal(50_000, 0.8, 0.2, seed=1)
    assert abs(metrics.auc(y, x) - roc_auc_score(y, x)) <= 1e-12
    xr = np.round(x, 1)
    assert abs(metrics.auc(y, xr) - roc_auc_score(y, xr)) <= 1e-12


@pytest.mark.parametrize(
    ("y", "scores", "match"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "finite"),
        ([0, 1, 1], [0.1, 0.3], "3 entries"),
    ],
)
def test_auc_rejects_bad_input_naming_the_problem(y, scores, match):
    with pytest.raises(ValueError, match=match):
        metrics.auc(y, scores)


# ---------------------------------------------------------------------------------------
# the weighted engine and the Poisson multiplicities


@pytest.mark.parametrize("flip", [False, True])  # positives or negatives as the cumulated class
def test_weighted_engine_equals_sklearn_sample_weight(flip):
    y, x1 = binormal(3_000, 0.75, 0.3, seed=2)
    y = 1 - y if flip else y
    rng = np.random.default_rng(3)
    x2 = np.round(0.5 * x1 + rng.normal(size=y.size), 1)  # heavy ties, different order
    engine = metrics._RankEngine(y.astype(bool), [x1, x2])
    w = rng.poisson(1.0, size=(y.size, 6)).astype(np.uint8)
    got = engine.aucs(*engine.split(w))
    for j in range(w.shape[1]):
        assert got[0, j] == pytest.approx(roc_auc_score(y, x1, sample_weight=w[:, j]), abs=1e-12)
        assert got[1, j] == pytest.approx(roc_auc_score(y, x2, sample_weight=w[:, j]), abs=1e-12)


def test_weighted_engine_marks_a_resample_without_a_class_as_nan():
    y = np.array([0, 0, 1, 1, 0])
    engine = metrics._RankEngine(y.astype(bool), [np.arange(5.0)])
    w = np.array([[1, 1], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=np.uint8)  # col 0: no positive
    got = engine.aucs(*engine.split(w))
    assert np.isnan(got[0, 0])
    assert got[0, 1] == pytest.approx(roc_auc_score(y, np.arange(5.0), sample_weight=w[:, 1]))


def test_poisson_multiplicities_have_poisson_1_frequencies():
    w = metrics.poisson_multiplicities(np.random.default_rng(0), (400_000, 1)).ravel()
    observed = np.bincount(w, minlength=8)[:8] / w.size
    expected = stats.poisson.pmf(np.arange(8), 1.0)
    assert np.abs(observed - expected).max() < 0.003
    assert w.mean() == pytest.approx(1.0, abs=0.005)
    assert w.var() == pytest.approx(1.0, abs=0.01)


# ---------------------------------------------------------------------------------------
# bootstrap intervals


def test_bootstrap_ci_covers_the_true_auc_at_about_the_nominal_rate():
    true_auc = 0.8
    covered = 0
    trials = 60
    for seed in range(trials):
        y, x = binormal(1_000, true_auc, 0.3, seed=100 + seed)
        ci = metrics.bootstrap_auc_ci(y, x, n_resamples=400, seed=seed)
        assert ci.lower <= ci.point <= ci.upper
        covered += ci.lower <= true_auc <= ci.upper
    # nominal 95%; 60 trials: below 85% would be a broken interval, not bad luck
    assert covered / trials >= 0.85


def test_bootstrap_ci_is_reproducible_and_reports_its_settings():
    y, x = binormal(2_000, 0.7, 0.2, seed=5)
    a = metrics.bootstrap_auc_ci(y, x, n_resamples=300, level=0.9, seed=11)
    b = metrics.bootstrap_auc_ci(y, x, n_resamples=300, level=0.9, seed=11)
    assert a == b
    assert (a.n_resamples, a.level, a.n_skipped) == (300, 0.9, 0)
    assert a.point == pytest.approx(roc_auc_score(y, x), abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": 0}, "n_resamples"),
        ({"level": 1.0}, "level"),
        ({"n_resamples": 2.5}, "n_resamples"),
    ],
)
def test_bootstrap_ci_validates_parameters(kwargs, match):
    y, x = binormal(100, 0.7, 0.3, seed=0)
    with pytest.raises(ValueError, match=match):
        metrics.bootstrap_auc_ci(y, x, **kwargs)


def test_tiny_data_skips_resamples_that_lose_a_class():
    y = np.array([0, 0, 0, 0, 1, 1])
    x = np.array([0.1, 0.4, 0.2, 0.3, 0.9, 0.35])
    ci = metrics.bootstrap_auc_ci(y, x, n_resamples=500, seed=1)
    assert ci.n_skipped > 0  # P(both positives weigh 0) = e^-2, about 68 of 500
    assert ci.n_resamples + ci.n_skipped == 500


# ---------------------------------------------------------------------------------------
# paired comparison and DeLong


def test_model_against_itself_has_exactly_zero_delta_and_interval():
    y, x = binormal(5_000, 0.8, 0.25, seed=7)
    cmp = metrics.paired_bootstrap_auc_delta(y, x, x.copy(), n_resamples=300)
    assert (cmp.delta, cmp.delta_lower, cmp.delta_upper) == (0.0, 0.0, 0.0)
    assert (cmp.delong_z, cmp.delong_p_value, cmp.delong_variance) == (0.0, 1.0, 0.0)


def test_a_monotone_transform_is_the_same_model():
    y, x = binormal(3_000, 0.8, 0.25, seed=8)
    cmp = metrics.paired_bootstrap_auc_delta(y, x, 1 / (1 + np.exp(-x)), n_resamples=200)
    assert (cmp.delta, cmp.delta_lower, cmp.delta_upper) == (0.0, 0.0, 0.0)


def test_paired_interval_agrees_with_delong_and_detects_a_real_gain():
    rng = np.random.default_rng(9)
    n = 20_000
    y = (rng.random(n) < 0.25).astype(int)
    shared = rng.normal(size=n)
    champion = 1.2 * y + shared + 0.6 * rng.normal(size=n)
    challenger = 1.45 * y + shared + 0.6 * rng.normal(size=n)
    cmp = metrics.paired_bootstrap_auc_delta(y, challenger, champion, n_resamples=1000, seed=3)
    assert cmp.auc_challenger == pytest.approx(roc_auc_score(y, challenger), abs=1e-12)
    assert cmp.auc_champion == pytest.approx(roc_auc_score(y, champion), abs=1e-12)
    assert cmp.delta_lower <= cmp.delta <= cmp.delta_upper
    assert cmp.delta_lower > 0 and cmp.delong_p_value < 1e-6
    # the bootstrap's interval width and DeLong's normal interval describe the same spread
    delong_width = 2 * stats.norm.ppf(0.975) * cmp.delong_se
    assert (cmp.delta_upper - cmp.delta_lower) == pytest.approx(delong_width, rel=0.15)
    # paired is much tighter than treating the two AUCs as independent
    ci_new = metrics.bootstrap_auc_ci(y, challenger, n_resamples=300)
    assert cmp.delta_upper - cmp.delta_lower < ci_new.upper - ci_new.lower


def test_paired_resamples_are_the_same_rows_for_both_models():
    # challenger = champion plus a constant on every row: any paired resample has delta 0
    y, x = binormal(2_000, 0.75, 0.3, seed=12)
    cmp = metrics.paired_bootstrap_auc_delta(y, x + 5.0, x, n_resamples=200)
    assert cmp.delta_lower == cmp.delta_upper == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_fast_delong_matches_the_slow_definition(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random(n) < 0.35).astype(int)
    x1 = y + rng.normal(size=n)
    x2 = np.round(0.7 * x1 + rng.normal(size=n), 1) if seed % 2 else 0.8 * y + rng.normal(size=n)
    fast = metrics.delong_test(y, x1, x2)
    a1, a2, var = slow_delong(y, x1, x2)
    assert fast.auc_1 == pytest.approx(a1, abs=1e-12)
    assert fast.auc_2 == pytest.approx(a2, abs=1e-12)
    assert fast.variance == pytest.approx(var, rel=1e-9)
    assert fast.z == pytest.approx((a1 - a2) / math.sqrt(var), rel=1e-9)
    assert fast.p_value == pytest.approx(2 * stats.norm.sf(abs(fast.z)), rel=1e-9)


def test_delong_is_calibrated_under_the_null():
    # equally good, correlated models: p < 0.05 about 5% of the time
    rejections = 0
    trials = 200
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        y = (rng.random(800) < 0.3).astype(int)
        shared = rng.normal(size=y.size)
        x1 = y + shared + rng.normal(size=y.size)
        x2 = y + shared + rng.normal(size=y.size)
        rejections += metrics.delong_test(y, x1, x2).p_value < 0.05
    assert rejections / trials < 0.10


# ---------------------------------------------------------------------------------------
# slices


def test_slice_aucs_computes_and_skips_with_reasons():
    y, x = binormal(400, 0.8, 0.3, seed=4)
    all_rows = np.ones(y.size, dtype=bool)
    few = np.zeros(y.size, dtype=bool)
    few[:10] = True
    negatives = y == 0
    results = slices.slice_aucs(
        (y, x), {"all": all_rows, "few": few, "negatives": negatives}, min_rows=30
    )
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["all", "few", "negatives"]
    assert by_name["all"].auc == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    assert (by_name["all"].n, by_name["all"].n_pos) == (400, int(y.sum()))
    assert by_name["few"].auc is None and by_name["few"].skipped_reason == "fewer than 30 rows"
    assert by_name["negatives"].auc is None
    assert by_name["negatives"].skipped_reason == "only one class"


def test_slice_aucs_accepts_a_frame_and_rejects_bad_masks():
    y, x = binormal(200, 0.8, 0.3, seed=4)
    frame = pd.DataFrame({s.TARGET: y, "score": x})
    res = slices.slice_aucs(frame, {"all": np.ones(200, dtype=bool)})
    assert res[0].auc == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    with pytest.raises(ValueError, match="boolean mask of length 200"):
        slices.slice_aucs(frame, {"bad": np.ones(10, dtype=bool)})
    with pytest.raises(ValueError, match="no column 'proba'"):
        slices.slice_aucs(frame, {"all": np.ones(200, dtype=bool)}, score_column="proba")


def test_default_slices_on_synthetic_data():
    frame = generate(SyntheticSpec(n_rows=3_000, seed=3))
    masks = slices.default_slices(frame, default_spec())
    assert list(masks) == [
        "enterprise",
        "contract:monthly",
        "contract:annual",
        "contract:multi-year",
        "tenure:0-12m",
        "tenure:12-24m",
        "tenure:24m+",
    ]
    assert masks["enterprise"].sum() == frame[s.IS_ENTERPRISE].sum()
    contract_total = sum(masks[f"contract:{c}"].sum() for c in s.CONTRACT_TYPES)
    assert contract_total == len(frame)
    tenure = frame[s.TENURE_MONTHS].to_numpy()
    assert masks["tenure:0-12m"].sum() == (tenure < 12).sum()
    assert masks["tenure:24m+"].sum() == (tenure >= 24).sum()
    bands = masks["tenure:0-12m"] ^ masks["tenure:12-24m"] ^ masks["tenure:24m+"]
    assert bands.all()  # every row in exactly one band


def test_default_slices_leave_missing_values_out():
    frame = generate(
        SyntheticSpec(n_rows=2_000, seed=3, null_rate={s.TENURE_MONTHS: 0.1, s.IS_ENTERPRISE: 0.1})
    )
    masks = slices.default_slices(frame, default_spec())
    null_tenure = frame[s.TENURE_MONTHS].isna().to_numpy()
    in_a_band = masks["tenure:0-12m"] | masks["tenure:12-24m"] | masks["tenure:24m+"]
    assert not in_a_band[null_tenure].any() and in_a_band[~null_tenure].all()
    assert not masks["enterprise"][frame[s.IS_ENTERPRISE].isna().to_numpy()].any()


def test_detectable_gain_is_the_textbook_minimum_detectable_effect():
    # a two-sided 5% test at 80% power detects (1.96 + 0.84) standard errors
    se = 0.0036
    z = metrics.normal_quantile(0.975)
    assert metrics.detectable_gain(se, z * se, 0.8) == pytest.approx(2.8016 * se, rel=1e-4)
    assert metrics.detectable_gain(0.0, 0.005) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="se must be"):
        metrics.detectable_gain(float("nan"), 0.0)
    with pytest.raises(ValueError, match="power"):
        metrics.detectable_gain(0.01, 0.0, power=1.0)


def test_a_slice_with_too_few_of_a_class_is_not_enough_evidence():
    # issue 26.7: rows are not evidence, churners are: 200 rows with 6 churners say little
    y = np.r_[np.ones(6, dtype=int), np.zeros(194, dtype=int)]
    x = np.random.default_rng(1).normal(size=y.size) + y
    every = {"all": np.ones(y.size, dtype=bool)}
    (thin,) = slices.slice_aucs((y, x), every, min_rows=30, min_per_class=10)
    assert thin.auc is None and thin.skipped_reason is not None
    assert thin.skipped_reason.startswith("not enough evidence: 6 churners and 194 non-churners")
    (judged,) = slices.slice_aucs((y, x), every, min_rows=30, min_per_class=5)
    assert judged.auc == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    (delta,) = slices.paired_slice_deltas(y, x, x, every, (100, 0.9, 0), min_per_class=10)
    assert delta.delta is None and delta.skipped_reason == thin.skipped_reason


def test_slice_intervals_are_the_bootstrap_of_the_slice_rows():
    y, x = binormal(600, 0.8, 0.3, seed=5)
    _, x_old = binormal(600, 0.8, 0.3, seed=6)
    half = np.arange(y.size) < 300
    (res,) = slices.slice_aucs((y, x), {"half": half}, interval=(200, 0.95, 3))
    ci = metrics.bootstrap_auc_ci(y[half], x[half], n_resamples=200, level=0.95, seed=3)
    assert (res.auc, res.lower, res.upper) == (ci.point, ci.lower, ci.upper)
    (d,) = slices.paired_slice_deltas(y, x, x_old, {"half": half}, (200, 0.9, 3))
    cmp = metrics.paired_bootstrap_auc_delta(y[half], x[half], x_old[half], 200, 0.9, 3)
    assert (d.delta, d.lower, d.upper) == (cmp.delta, cmp.delta_lower, cmp.delta_upper)
