"""Layer 1: the feature transformers (shape, periodicity, range, frequencies, no NaN)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from churn_platform.core import schema as s
from churn_platform.core.features import (
    BooleanToFloat,
    CyclicalEncoder,
    DaysSinceReference,
    FrequencyEncoder,
    build_feature_transformer,
    feature_ranges,
)
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate


def test_cyclical_shape_and_names():
    enc = CyclicalEncoder().fit(pd.DataFrame({"h": [0, 6, 12]}))
    out = enc.transform(pd.DataFrame({"h": [0, 6, 12, 18]}))
    assert out.shape == (4, 2)
    assert list(enc.get_feature_names_out()) == ["h_sin", "h_cos"]


def test_cyclical_is_periodic_and_neighbours_are_close():
    enc = CyclicalEncoder(period=24).fit(pd.DataFrame({"h": [0]}))
    out = enc.transform(pd.DataFrame({"h": [0, 24, 23, 1, 12]}))
    np.testing.assert_allclose(out[0], out[1], atol=1e-12)  # 0 and 24 are the same hour
    assert np.linalg.norm(out[2] - out[3]) < np.linalg.norm(out[0] - out[4])  # 23~1, 0 far from 12


def test_cyclical_rejects_bad_period():
    with pytest.raises(ValueError, match="period"):
        CyclicalEncoder(period=0).fit(pd.DataFrame({"h": [1]}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=50))
def test_cyclical_points_lie_on_the_unit_circle(hours):
    out = CyclicalEncoder().fit(pd.DataFrame({"h": [0]})).transform(pd.DataFrame({"h": hours}))
    assert np.all(np.abs(out) <= 1.0 + 1e-12)
    np.testing.assert_allclose(out[:, 0] ** 2 + out[:, 1] ** 2, 1.0, atol=1e-9)


def test_frequency_encoder_learns_shares_and_handles_unseen():
    train = pd.DataFrame({"c": ["a", "a", "a", "b"]})
    enc = FrequencyEncoder().fit(train)
    out = enc.transform(pd.DataFrame({"c": ["a", "b", "zzz", None]}))
    np.testing.assert_allclose(out[:, 0], [0.75, 0.25, 0.0, 0.0])
    assert list(enc.get_feature_names_out()) == ["c_freq"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=1, max_size=80))
def test_frequencies_sum_to_one_over_categories_and_stay_in_unit_range(values):
    frame = pd.DataFrame({"c": values})
    enc = FrequencyEncoder().fit(frame)
    assert sum(enc.frequencies_["c"].values()) == pytest.approx(1.0)
    out = enc.transform(frame)[:, 0]
    assert np.all((out >= 0) & (out <= 1)) and not np.isnan(out).any()
    # each row's encoding is the share of its own value
    shares = frame["c"].map(frame["c"].value_counts(normalize=True)).to_numpy()
    np.testing.assert_allclose(out, shares)


def test_days_since_reference_is_learned_at_fit_time():
    train = pd.DataFrame({"d": pd.to_datetime(["2026-01-01", "2026-01-11"])})
    enc = DaysSinceReference().fit(train)
    out = enc.transform(
        pd.DataFrame({"d": pd.to_datetime(["2026-01-01", "2026-01-11", "2026-01-21"])})
    )
    np.testing.assert_allclose(out[:, 0], [10.0, 0.0, -10.0])
    # the reference does not move with new data: the same model answers the same tomorrow
    again = enc.transform(pd.DataFrame({"d": pd.to_datetime(["2026-01-01"])}))
    assert again[0, 0] == 10.0


def test_days_since_reference_needs_a_date():
    with pytest.raises(ValueError, match="no valid date"):
        DaysSinceReference().fit(pd.DataFrame({"d": [None, None]}))


def test_boolean_to_float_accepts_nullable_and_text():
    out = BooleanToFloat().fit_transform(pd.DataFrame({"b": ["Yes", "no", None, "true"]}))
    np.testing.assert_array_equal(out[:, 0][[0, 1, 3]], [1.0, 0.0, 1.0])
    assert np.isnan(out[2, 0])


def test_feature_transformer_on_real_rows_has_expected_shape_and_no_nan():
    frame = generate(SyntheticSpec(n_rows=2000, seed=3))
    ct = build_feature_transformer(default_spec()).fit(frame[list(s.MODEL_INPUT_COLUMNS)])
    out = ct.transform(frame[list(s.MODEL_INPUT_COLUMNS)])
    names = list(ct.get_feature_names_out())
    assert out.shape == (2000, len(names))
    assert len(names) == 2 + 3 + 2 + 1 + 1 + 3
    assert not np.isnan(out.astype(float)).any()
    encoded = pd.DataFrame(out, columns=names)
    for name, (lo, hi) in feature_ranges(default_spec()).items():
        assert encoded[name].between(lo, hi).all(), name


def test_unknown_contract_type_encodes_to_zeros_not_an_error():
    frame = generate(SyntheticSpec(n_rows=500, seed=3))
    ct = build_feature_transformer(default_spec()).fit(frame[list(s.MODEL_INPUT_COLUMNS)])
    odd = frame[list(s.MODEL_INPUT_COLUMNS)].head(3).assign(contract_type="weekly")
    encoded = pd.DataFrame(ct.transform(odd), columns=ct.get_feature_names_out())
    assert (encoded[[f"contract_type_{c}" for c in s.CONTRACT_TYPES]] == 0).all().all()
    assert (encoded["contract_type_freq"] == 0).all()


def test_transformers_are_clonable_sklearn_estimators():
    for est in (
        CyclicalEncoder(period=12),
        FrequencyEncoder(),
        DaysSinceReference(),
        BooleanToFloat(),
    ):
        assert clone(est).get_params() == est.get_params()
