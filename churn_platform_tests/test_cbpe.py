"""CBPE: the AUC estimate before outcomes arrive (``core/cbpe.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churn_platform.core import cbpe
from churn_platform.core.synthetic import SyntheticSpec, churn_log_odds, generate


def served_scores(frame) -> np.ndarray:
    """A model that ranks by the true mechanism but is miscalibrated (over-confident and
    shifted), so the estimate needs its calibrator."""
    logit = churn_log_odds(frame)
    return 1.0 / (1.0 + np.exp(-(1.6 * logit + 0.7)))


def world(n: int, seed: int, **shift) -> tuple[np.ndarray, np.ndarray]:
    frame = generate(SyntheticSpec(n_rows=n, seed=seed, **shift))
    return frame["churned"].to_numpy(), served_scores(frame)


def test_estimate_is_the_weighted_auc_of_the_expected_labels() -> None:
    """Each row a churner with weight c and a stayer with weight 1 - c: the expected ROC."""
    rng = np.random.default_rng(0)
    c = rng.random(2000).round(2)  # many ties
    s = np.round(c + rng.normal(0, 0.1, 2000), 1)
    for scores in (None, s):
        ranked = c if scores is None else s
        want = roc_auc_score(
            np.r_[np.ones(c.size), np.zeros(c.size)],
            np.r_[ranked, ranked],
            sample_weight=np.r_[c, 1.0 - c],
        )
        assert cbpe.estimate_auc(c, scores) == pytest.approx(want, abs=1e-12)
    assert cbpe.estimate_auc(np.zeros(5)) is None


def test_cbpe_within_002_of_the_true_auc_under_covariate_shift() -> None:
    y_ref, s_ref = world(40_000, seed=1)
    calibrator = cbpe.fit_calibrator(y_ref, s_ref)
    # customers move: more spend, more monthly contracts; P(churn | features) unchanged
    y, s = world(60_000, seed=2, spend_shift=60.0, contract_mix=(0.75, 0.15, 0.10))
    true_auc = roc_auc_score(y, s)
    assert abs(true_auc - roc_auc_score(y_ref, s_ref)) > 0.005  # the shift moves the AUC
    est = cbpe.estimate_version("3", s, calibrator, realized_auc=true_auc)
    assert est.auc_estimate is not None and est.error is not None
    assert abs(est.error) < 0.02, (est.auc_estimate, true_auc)
    # uncalibrated scores would not do: the calibrator is what makes the estimate right
    raw = cbpe.estimate_auc(s, s)
    assert raw is not None and abs(raw - true_auc) > abs(est.error)


def test_cbpe_cannot_see_concept_drift() -> None:
    """The same customers churning differently: the estimate stays, the realized AUC falls."""
    y_ref, s_ref = world(40_000, seed=1)
    calibrator = cbpe.fit_calibrator(y_ref, s_ref)
    frame = generate(SyntheticSpec(n_rows=60_000, seed=3, invert_contract_effect=True))
    s = served_scores(frame)
    est = cbpe.estimate_version("3", s, calibrator, realized_auc=roc_auc_score(frame["churned"], s))
    assert est.error is not None and est.error > 0.03
    assert "concept drift" in cbpe.BLIND_SPOT


def test_calibrator_round_trips_as_json_and_rejects_bad_artefacts() -> None:
    y, s = world(5000, seed=4)
    cal = cbpe.fit_calibrator(y, s)
    back = cbpe.IsotonicCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    np.testing.assert_array_equal(back.apply(s), cal.apply(s))
    with pytest.raises(ValueError, match="'kind'"):
        cbpe.IsotonicCalibrator.from_dict({"x": [0.1], "y": [0.2]})
    with pytest.raises(ValueError, match="'x' and 'y'"):
        cbpe.IsotonicCalibrator.from_dict({"kind": "isotonic", "x": [0.1]})
    with pytest.raises(ValueError, match="scores must be finite"):
        cal.apply(np.array([0.2, np.nan]))


def test_the_binned_estimate_stays_within_its_bound_of_the_exact_one() -> None:
    rng = np.random.default_rng(5)
    c = rng.beta(2, 5, 50_000)
    s = np.clip(c + rng.normal(0, 0.05, c.size), 0, 1)
    for scores in (None, s):
        exact = cbpe.estimate_auc(c, scores)
        for bins in (16, 1024, 2**16):
            binned, bound = cbpe.estimate_auc_binned(c, scores, bins)
            assert exact is not None and binned is not None
            assert abs(binned - exact) <= bound + 1e-12
        assert bound < 1e-4  # 65,536 bins
    coarse, coarse_bound = cbpe.estimate_auc_binned(c, None, 4)
    assert coarse_bound > 0.01 and coarse is not None


def test_the_calibrated_estimate_is_nannymls_definition_within_its_bound() -> None:
    """``estimate_auc_calibrated`` (counts per score bin, rows calibrated one by one only
    where the calibrator rises) against the exact estimate of every row calibrated, ranked
    by the calibrated value (NannyML's definition) and by the score."""
    y_ref, s_ref = world(20_000, 1)
    calibrator = cbpe.fit_calibrator(y_ref, s_ref)
    _, s = world(60_000, 2, spend_shift=60.0)
    c = calibrator.apply(s)
    exact, by_score = cbpe.estimate_auc(c), cbpe.estimate_auc(c, s)
    assert exact is not None and by_score is not None
    assert by_score == pytest.approx(exact, abs=1e-9)  # a monotone calibrator: same ranking
    for bins in (8, 256, 2**16):
        fast, bound = cbpe.estimate_auc_calibrated(calibrator, s, bins)
        assert fast is not None
        assert abs(fast - exact) <= bound + 1e-12, (bins, fast, exact, bound)
    assert bound < 1e-6 and abs(fast - exact) < 1e-6
    coarse, coarse_bound = cbpe.estimate_auc_calibrated(calibrator, s, 8)
    assert coarse_bound > 1e-3 and coarse is not None


def test_the_calibrated_estimate_with_ramps_and_clipped_ends() -> None:
    """A calibrator with long linear ramps (no flat run) and scores beyond its first and
    last knot: the rows of every rising bin are calibrated one by one."""
    calibrator = cbpe.IsotonicCalibrator((0.2, 0.5, 0.9), (0.05, 0.3, 0.95), 100)
    rng = np.random.default_rng(3)
    s = np.r_[rng.random(30_000), 0.0, 1.0]
    fast, bound = cbpe.estimate_auc_calibrated(calibrator, s, 1024)
    exact = cbpe.estimate_auc(calibrator.apply(s))
    assert exact is not None and fast is not None
    assert abs(fast - exact) <= bound + 1e-12 and bound < 1e-3
    flat = cbpe.IsotonicCalibrator((0.5,), (0.0,), 10)
    assert cbpe.estimate_auc_calibrated(flat, s) == (None, 0.0)  # no expected churner
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        cbpe.estimate_auc_calibrated(calibrator, s, 0)
    with pytest.raises(ValueError, match="scores must be finite probabilities"):
        cbpe.estimate_auc_calibrated(calibrator, np.array([0.5, np.nan]))
