"""PSI drift: the reference profile, PSI values on real shifts, unseen/missing, empty frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churn_platform.core import drift
from churn_platform.core import schema as s
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate

SHIPPED = default_spec()


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate(SyntheticSpec(n_rows=20_000, seed=1))


@pytest.fixture(scope="module")
def profile(reference) -> dict:
    # round-trip through JSON: the sensor reads the stored artefact, not the dict
    return json.loads(json.dumps(drift.build_reference_profile(reference, SHIPPED)))


def test_profile_shape_and_defaults(profile):
    assert profile["format"] == drift.PROFILE_FORMAT and profile["version"] == 1
    expected = [*s.NUMERIC_FEATURES, *s.CATEGORICAL_FEATURES, s.IS_ENTERPRISE]
    assert list(profile["features"]) == expected
    for name, spec in profile["features"].items():
        assert len(spec["bins"]) == len(spec["shares"]), name
        assert sum(spec["shares"]) == pytest.approx(1.0), name
        assert spec["bins"][-1] == drift.MISSING_BIN
    spend = profile["features"][s.MONTHLY_SPEND]
    assert len(spend["edges"]) == 9  # 10 quantile bins on a continuous column
    # below-min and above-max bins of their own, empty on the training rows
    assert spend["bins"][0] == drift.BELOW_BIN and spend["bins"][-2] == drift.ABOVE_BIN
    assert spend["shares"][0] == spend["shares"][-2] == 0.0
    assert np.allclose(spend["shares"][1:-2], 0.1, atol=0.002)
    assert profile["features"][s.REGION]["categories"] == sorted(s.REGIONS)
    assert profile["features"][s.IS_ENTERPRISE]["categories"] == [False, True]


def test_low_cardinality_columns_are_binned_by_value():
    frame = pd.DataFrame({"k": np.resize([0, 0, 0, 0, 0, 0, 1, 1, 2, 3], 1000)})
    prof = drift.build_reference_profile(frame, SHIPPED, numeric=["k"], categorical=[])
    k = prof["features"]["k"]
    # each observed value has its own bin, anything else lands in __other__
    assert k["kind"] == "discrete" and k["values"] == [0.0, 1.0, 2.0, 3.0]
    assert k["bins"] == ["0", "1", "2", "3", drift.OTHER_BIN, drift.MISSING_BIN]
    assert k["shares"] == pytest.approx([0.6, 0.2, 0.1, 0.1, 0.0, 0.0])
    shifted = pd.DataFrame({"k": np.resize([0, 1, 2, 3, 7], 1000)})
    result = drift.psi(json.loads(json.dumps(prof)), shifted)
    assert result.unseen_counts["k"] == 200 and result.psi["k"] > 0.2


def test_discrete_columns_with_many_values_get_deduplicated_edges():
    values = np.resize([0] * 40 + [1] * 20 + list(range(2, 14)), 1000)
    prof = drift.build_reference_profile(
        pd.DataFrame({"k": values}), SHIPPED, numeric=["k"], categorical=[]
    )
    k = prof["features"]["k"]
    assert k["kind"] == "numeric" and k["edges"] == sorted(set(k["edges"])) and len(k["edges"]) < 9
    assert (k["min"], k["max"]) == (0.0, 13.0)
    assert k["shares"][0] == 0.0 and k["shares"][-2] == 0.0  # nothing below min or above max


def test_a_constant_training_column_that_later_varies_is_drift():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"z": np.zeros(5_000), "x": rng.normal(size=5_000)})
    prof = json.loads(
        json.dumps(drift.build_reference_profile(ref, SHIPPED, numeric=["z", "x"], categorical=[]))
    )
    cur = pd.DataFrame({"z": rng.exponential(size=5_000), "x": rng.normal(size=5_000)})
    result = drift.psi(prof, cur)
    assert result.psi["z"] > 0.2 and result.psi["x"] < 0.05
    # a continuous column that leaves its training range lands in the above-max bin
    moved = pd.DataFrame({"z": np.zeros(5_000), "x": ref["x"].max() + rng.exponential(size=5_000)})
    assert drift.psi(prof, moved).psi["x"] > 1.0


def test_a_mostly_zero_column_whose_rest_grows_is_drift():
    rng = np.random.default_rng(3)
    n = 10_000
    ref = pd.DataFrame({"x": np.where(rng.random(n) < 0.95, 0.0, rng.uniform(0, 1, n))})
    prof = drift.build_reference_profile(ref, SHIPPED, numeric=["x"], categorical=[])
    x = prof["features"]["x"]
    assert x["kind"] == "numeric" and x["points"] == [0.0]
    assert "[0, 0]" in x["bins"] and x["shares"][x["bins"].index("[0, 0]")] > 0.9
    same = pd.DataFrame({"x": np.where(rng.random(n) < 0.95, 0.0, rng.uniform(0, 1, n))})
    grown = pd.DataFrame({"x": np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0, 1, n))})
    prof = json.loads(json.dumps(prof))
    assert drift.psi(prof, same).psi["x"] < 0.02
    assert drift.psi(prof, grown).psi["x"] > 0.2


def test_an_integer_mix_change_is_detected_through_the_spec():
    from churn_platform.core.spec import parse_spec

    spec = parse_spec(
        {
            "entity_id": {"column": "id"},
            "target": {"column": "y", "positive": [1], "negative": [0]},
            "features": {
                "seats": {"kind": "integer"},
                "plan": {"kind": "categorical", "allowed": ["a", "b"]},
                "note_len": {"kind": "numeric", "drift": False},
            },
        }
    )
    rng = np.random.default_rng(1)
    n = 4_000
    ref = pd.DataFrame(
        {
            "seats": pd.array(rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1]), dtype="Int64"),
            "plan": pd.array(rng.choice(["a", "b"], n), dtype="string"),
        }
    )
    prof = json.loads(json.dumps(drift.build_reference_profile(ref, spec)))
    assert list(prof["features"]) == ["seats", "plan"]  # note_len is not watched
    assert prof["features"]["seats"]["kind"] == "discrete"
    assert prof["spec_hash"] == spec.short_hash
    same = ref.sample(frac=1.0, random_state=2)
    assert drift.psi(prof, same).max_psi < 0.01
    mixed = ref.assign(seats=pd.array(rng.choice([0, 1, 2], n, p=[0.3, 0.3, 0.4]), dtype="Int64"))
    result = drift.psi(prof, mixed)
    assert list(result.drifted()) == ["seats"] and result.psi["seats"] > 0.2


def test_a_profile_stored_before_the_range_bins_still_scores(reference):
    # the JSON a model logged before this change: numeric entries without min/max, whose
    # outer bins are open (a stored v1 profile of the shipped spec, abridged to two features)
    old = {
        "format": drift.PROFILE_FORMAT,
        "version": 1,
        "n_rows": 4,
        "n_bins": 10,
        "epsilon": 1e-4,
        "features": {
            s.MONTHLY_SPEND: {
                "kind": "numeric",
                "edges": [50.0, 100.0],
                "bins": ["[-inf, 50)", "[50, 100)", "[100, inf)", drift.MISSING_BIN],
                "shares": [0.25, 0.5, 0.25, 0.0],
            },
            s.REGION: {
                "kind": "categorical",
                "categories": ["east", "north", "south", "west"],
                "bins": ["east", "north", "south", "west", drift.UNSEEN_BIN, drift.MISSING_BIN],
                "shares": [0.25, 0.25, 0.25, 0.25, 0.0, 0.0],
            },
        },
    }
    result = drift.psi(old, reference)
    assert set(result.psi) == {s.MONTHLY_SPEND, s.REGION}
    spend = reference[s.MONTHLY_SPEND].to_numpy()
    current = np.array(
        [(spend < 50).mean(), ((spend >= 50) & (spend < 100)).mean(), (spend >= 100).mean(), 0.0]
    )
    expected = drift.psi_from_shares(np.array([0.25, 0.5, 0.25, 0.0]), current, 1e-4)
    assert result.psi[s.MONTHLY_SPEND] == pytest.approx(expected)


def test_same_distribution_has_small_psi(profile):
    current = generate(SyntheticSpec(n_rows=20_000, seed=2))
    result = drift.psi(profile, current)
    assert result.n_rows == 20_000
    assert set(result.psi) == set(profile["features"])
    assert result.max_psi < 0.05
    assert result.drifted() == {}


def test_spend_shift_is_detected_on_spend_only(profile):
    current = generate(SyntheticSpec(n_rows=20_000, seed=2, spend_shift=60))
    result = drift.psi(profile, current)
    assert result.psi[s.MONTHLY_SPEND] > 0.2
    assert result.max_feature == s.MONTHLY_SPEND
    assert list(result.drifted(0.2)) == [s.MONTHLY_SPEND]


def test_contract_mix_shift_is_detected(profile):
    current = generate(SyntheticSpec(n_rows=20_000, seed=2, contract_mix=(0.2, 0.4, 0.4)))
    assert drift.psi(profile, current).psi[s.CONTRACT_TYPE] > 0.2


def test_psi_matches_a_hand_computation():
    ref = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    prof = drift.build_reference_profile(ref, SHIPPED, numeric=[], categorical=["c"])
    cur = pd.DataFrame({"c": ["a"] * 80 + ["b"] * 20})
    eps = prof["epsilon"]
    p = (np.array([0.5, 0.5, 0, 0]) + eps) / (1 + 4 * eps)
    q = (np.array([0.8, 0.2, 0, 0]) + eps) / (1 + 4 * eps)
    assert drift.psi(prof, cur).psi["c"] == pytest.approx(np.sum((q - p) * np.log(q / p)))


def test_unseen_category_is_counted_not_crashing(profile):
    current = generate(SyntheticSpec(n_rows=5_000, seed=3))
    current[s.REGION] = current[s.REGION].astype(object)
    current.loc[:499, s.REGION] = "antarctica"
    current.loc[500:599, s.REGION] = None
    result = drift.psi(profile, current)
    assert result.unseen_counts[s.REGION] == 500
    assert result.missing_counts[s.REGION] == 100
    assert result.unseen_counts[s.CONTRACT_TYPE] == 0
    assert result.psi[s.REGION] > 0.2  # 10% of rows in a bin the reference had empty


@pytest.mark.parametrize("dtype", ["string", "category", "string[pyarrow]"])
def test_categorical_dtypes_agree(profile, dtype):
    current = generate(SyntheticSpec(n_rows=5_000, seed=3))
    current[s.REGION] = current[s.REGION].astype(object)
    current.loc[:99, s.REGION] = "antarctica"
    current.loc[100:149, s.REGION] = None
    base = drift.psi(profile, current)
    converted = current.copy()
    converted[s.REGION] = converted[s.REGION].astype(dtype)
    other = drift.psi(profile, converted)
    assert other.psi[s.REGION] == pytest.approx(base.psi[s.REGION], abs=1e-12)
    assert other.unseen_counts[s.REGION] == 100 and other.missing_counts[s.REGION] == 50


def test_missing_values_are_counted_in_every_kind_of_column(profile):
    spec = SyntheticSpec(
        n_rows=10_000,
        seed=4,
        null_rate={s.MONTHLY_SPEND: 0.05, s.TENURE_MONTHS: 0.05, s.IS_ENTERPRISE: 0.05},
    )
    current = generate(spec)
    result = drift.psi(profile, current)
    for col in (s.MONTHLY_SPEND, s.TENURE_MONTHS, s.IS_ENTERPRISE):
        assert result.missing_counts[col] == int(current[col].isna().sum()) > 0
    assert result.missing_counts[s.REGION] == 0
    # 5% of rows in the (empty in training) missing bin is drift-worthy by itself
    assert result.psi[s.MONTHLY_SPEND] > 0.1


def test_nullable_dtypes_are_read(profile):
    current = generate(SyntheticSpec(n_rows=5_000, seed=5))
    typed = current.astype({k: v for k, v in s.CANONICAL_DTYPES.items() if k != s.SIGNUP_DATE})
    a, b = drift.psi(profile, current), drift.psi(profile, typed)
    assert a.psi == pytest.approx(b.psi, abs=1e-12)


def test_empty_frame_is_a_result_with_a_reason(profile):
    for empty in (generate(SyntheticSpec(n_rows=10, seed=1)).iloc[:0], pd.DataFrame()):
        result = drift.psi(profile, empty)
        assert result.n_rows == 0 and result.psi == {}
        assert result.max_feature is None and result.skipped_reason == "current frame has no rows"


def test_bad_inputs_are_named(profile, reference):
    with pytest.raises(ValueError, match="lacks profiled columns"):
        drift.psi(profile, reference.drop(columns=[s.REGION]))
    with pytest.raises(ValueError, match="version 99"):
        drift.psi({**profile, "version": 99}, reference)
    with pytest.raises(ValueError, match="no rows"):
        drift.build_reference_profile(reference.iloc[:0], SHIPPED)
    with pytest.raises(ValueError, match="n_bins"):
        drift.build_reference_profile(reference, SHIPPED, n_bins=1)


def test_a_watched_date_is_profiled_in_days_and_read_from_text():
    from churn_platform.core.spec import parse_spec

    spec = parse_spec(
        {
            "entity_id": {"column": "id"},
            "target": {"column": "y", "positive": [1], "negative": [0]},
            "features": {"opened": {"kind": "date"}},
        }
    )
    rng = np.random.default_rng(4)
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, 5_000), unit="D")
    ref = pd.DataFrame({"opened": pd.Series(days).astype("datetime64[ns]")})
    prof = json.loads(json.dumps(drift.build_reference_profile(ref, spec)))
    assert prof["features"]["opened"]["dates"] is True
    # a request log holds ISO text: the same dates read the same
    as_text = pd.DataFrame({"opened": ref["opened"].dt.strftime("%Y-%m-%d")})
    assert drift.psi(prof, as_text).psi["opened"] < 1e-9
    later = pd.DataFrame({"opened": (ref["opened"] + pd.Timedelta(days=400)).astype(str)})
    assert drift.psi(prof, later).psi["opened"] > 1.0
