"""The model pipeline and the model checks, on synthetic data with a known mechanism."""

from __future__ import annotations

import numpy as np
import pytest

from churn_platform.core import holdout, model_checks, training
from churn_platform.core import schema as s
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate

SHIPPED = default_spec()


@pytest.fixture(scope="module")
def data():
    return holdout.split(generate(SyntheticSpec(n_rows=20_000, seed=11)), spec=default_spec())


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    return training.train(train, training.TrainingConfig(), SHIPPED)


def test_same_data_config_and_seed_give_the_same_model(data, fitted):
    train, test = data
    again = training.train(train, training.TrainingConfig(), SHIPPED)
    np.testing.assert_array_equal(
        training.predict_proba(fitted.pipeline, test), training.predict_proba(again.pipeline, test)
    )


def test_hgb_model_passes_every_model_check(data, fitted):
    _, test = data
    outcomes = model_checks.run_model_checks(
        fitted.pipeline, test, model_checks.ModelCheckConfig(n_resamples=300), SHIPPED
    )
    by_name = {o.name: o for o in outcomes}
    assert [o.name for o in outcomes if not o.passed] == [], {
        o.name: o.description for o in outcomes
    }
    auc = by_name["holdout_auc"].metadata
    assert auc["auc_ci_lower"] < auc["auc"] < auc["auc_ci_upper"]
    assert by_name["contract_invariance"].metadata["fraction_lowered"] > 0.9


def test_logistic_regression_is_an_option(data):
    train, test = data
    lr = training.train(train, training.TrainingConfig(estimator="logistic_regression"), SHIPPED)
    p = training.predict_proba(lr.pipeline, test)
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))


def test_unknown_estimator_is_named_in_the_error():
    with pytest.raises(ValueError, match="estimator must be one of.*'xgboost'"):
        training.TrainingConfig(estimator="xgboost")


def test_model_trained_where_annual_churns_more_fails_invariance():
    train, test = holdout.split(
        generate(SyntheticSpec(n_rows=8000, seed=5, invert_contract_effect=True)),
        spec=default_spec(),
    )
    model = training.train(train, training.TrainingConfig(max_iter=80), SHIPPED)
    outcome = model_checks.invariance_check(
        model.pipeline, test, model_checks.ModelCheckConfig(), SHIPPED
    )
    assert not outcome.passed
    assert outcome.metadata["fraction_lowered"] < 0.5
    assert "fraction" in outcome.description or "%" in outcome.description


def test_slice_check_skips_small_slices_with_reason(data, fitted):
    _, test = data
    small = test.head(200)
    outcome = model_checks.slice_auc_check(
        small,
        training.predict_proba(fitted.pipeline, small),
        model_checks.ModelCheckConfig(min_slice_rows=60),
        SHIPPED,
    )
    notes = outcome.table.set_index("slice")["note"]
    assert any("fewer than" in str(n) for n in notes), notes


def test_coverage_check_catches_nan_and_out_of_range(data):
    _, test = data
    scores = np.full(len(test), 0.5)
    scores[[0, 3]] = [np.nan, 1.5]
    outcome = model_checks.coverage_check(test, scores, SHIPPED)
    assert not outcome.passed and outcome.metadata["bad_scores"] == 2
    assert set(outcome.table[s.CUSTOMER_ID]) == set(test[s.CUSTOMER_ID].iloc[[0, 3]])


def test_training_on_one_class_says_so():
    frame = generate(SyntheticSpec(n_rows=300, seed=1)).assign(churned=0)
    with pytest.raises(ValueError, match="single class"):
        training.train(frame, training.TrainingConfig(), SHIPPED)


def test_holdout_is_stable_across_snapshots():
    a = generate(SyntheticSpec(n_rows=3000, seed=1))
    b = generate(SyntheticSpec(n_rows=5000, seed=2))  # a later snapshot: more customers, new values
    in_a = set(holdout.split(a, spec=default_spec())[1][s.CUSTOMER_ID])
    in_b = set(holdout.split(b, spec=default_spec())[1][s.CUSTOMER_ID])
    common = set(a[s.CUSTOMER_ID]) & set(b[s.CUSTOMER_ID])
    assert {c for c in common if c in in_a} == {c for c in common if c in in_b}
    assert 0.15 < len(in_a) / len(a) < 0.25
    shuffled = a.sample(frac=1.0, random_state=0)
    assert set(holdout.split(shuffled, spec=default_spec())[1][s.CUSTOMER_ID]) == in_a


def test_stratified_sample_keeps_the_class_ratio_and_is_deterministic():
    labels = np.r_[np.ones(3_000, int), np.zeros(17_000, int)]
    np.random.default_rng(0).shuffle(labels)
    rows = training.stratified_sample(labels, 1_000, seed=7)
    assert len(rows) == 1_000 and len(np.unique(rows)) == 1_000
    assert np.all(np.diff(rows) > 0)  # file order kept
    assert labels[rows].sum() == 150  # 15% churners, exactly as in the table
    np.testing.assert_array_equal(rows, training.stratified_sample(labels, 1_000, seed=7))
    assert not np.array_equal(rows, training.stratified_sample(labels, 1_000, seed=8))
    # no cap, or a cap above the row count: every row
    np.testing.assert_array_equal(training.stratified_sample(labels, 0, 7), np.arange(20_000))
    np.testing.assert_array_equal(training.stratified_sample(labels, 50_000, 7), np.arange(20_000))


def test_training_is_capped_to_a_stratified_sample_of_the_training_rows(data):
    train, _ = data
    capped = training.train(train, training.TrainingConfig(max_training_rows=4_000), SHIPPED)
    assert capped.n_train_rows == 4_000 and capped.n_available_rows == len(train)
    assert capped.rows is not None and len(capped.rows) == 4_000
    assert set(capped.rows[s.CUSTOMER_ID]) <= set(train[s.CUSTOMER_ID])
    assert capped.train_positive_rate == pytest.approx(train[s.TARGET].mean(), abs=1 / 4_000)
    again = training.train(train, training.TrainingConfig(max_training_rows=4_000), SHIPPED)
    assert list(again.rows[s.CUSTOMER_ID]) == list(capped.rows[s.CUSTOMER_ID])


def test_early_stopping_stops_before_max_iter_on_an_easy_problem(data):
    train, test = data
    config = training.TrainingConfig(max_iter=2_000, learning_rate=0.5, early_stopping="on")
    stopped = training.train(train, config, SHIPPED)
    assert stopped.n_iter is not None and stopped.n_iter < 2_000
    again = training.train(train, config, SHIPPED)  # the validation split is seeded too
    assert again.n_iter == stopped.n_iter
    np.testing.assert_array_equal(
        training.predict_proba(stopped.pipeline, test), training.predict_proba(again.pipeline, test)
    )
    # "auto" leaves a table this small without early stopping: every iteration runs
    assert training.train(train, training.TrainingConfig(max_iter=30), SHIPPED).n_iter == 30


def test_bad_cap_and_early_stopping_settings_are_named():
    with pytest.raises(ValueError, match="max_training_rows must be >= 0"):
        training.TrainingConfig(max_training_rows=-1)
    with pytest.raises(ValueError, match="early_stopping must be one of"):
        training.TrainingConfig(early_stopping="sometimes")
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        training.TrainingConfig(validation_fraction=1.0)


def test_slice_check_fails_only_a_slice_shown_below_the_floor(data, fitted):
    # issue 26.7: the floor is judged on the slice AUC interval's upper bound
    _, test = data
    scores = training.predict_proba(fitted.pipeline, test)
    cfg = model_checks.ModelCheckConfig(n_resamples=200, min_slice_auc=0.5)
    table = model_checks.slice_auc_check(test, scores, cfg, SHIPPED).table.set_index("slice")
    row = table.loc["enterprise"]
    assert row["ci_lower"] < row["auc"] < row["ci_upper"]
    # a floor between the point AUC and the upper bound: below the floor, but not shown
    between = model_checks.ModelCheckConfig(
        n_resamples=200, min_slice_auc=round((row["auc"] + row["ci_upper"]) / 2, 4)
    )
    outcome = model_checks.slice_auc_check(test, scores, between, SHIPPED)
    status = outcome.table.set_index("slice").loc["enterprise", "status"]
    assert status == "pass (below the floor, not shown)"
    above = model_checks.ModelCheckConfig(n_resamples=200, min_slice_auc=row["ci_upper"] + 0.001)
    failed = model_checks.slice_auc_check(test, scores, above, SHIPPED)
    assert not failed.passed and "enterprise" in str(failed.metadata["failing_slices"])


def test_slice_check_reports_a_slice_with_few_churners_and_does_not_fail_it(data, fitted):
    _, test = data
    scores = training.predict_proba(fitted.pipeline, test)
    cfg = model_checks.ModelCheckConfig(
        n_resamples=100, min_slice_auc=0.99, min_slice_per_class=10**6
    )
    outcome = model_checks.slice_auc_check(test, scores, cfg, SHIPPED)
    assert outcome.passed  # nothing can be judged, so nothing fails
    assert set(outcome.table["status"]) == {"not enough evidence"}
    assert "enterprise" in str(outcome.metadata["slices_not_enough_evidence"])
