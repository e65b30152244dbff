"""The model side reads the spec: features, training, slices, invariances, the logged spec.

A small table of another shape is generated here with a known mechanism: a ``premium``
plan and more ``usage`` lower churn, an add-on raises it, ``score`` is noise with nulls,
``seats`` is noise; no date and no hour column. Its spec is not the shipped one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from churn_platform.core import features, model_checks, records, slices, training
from churn_platform.core.spec import MODEL_METADATA_KEY, default_spec, parse_spec

SPEC = parse_spec(
    {
        "name": "accounts",
        "entity_id": {"column": "account_id"},
        "target": {"column": "left", "positive": [1], "negative": [0]},
        "features": {
            "plan": {
                "kind": "categorical",
                "allowed": ["basic", "plus", "premium"],
                "encoding": ["native"],
            },
            "usage": {"kind": "numeric", "range": [0, None]},
            "has_addon": {"kind": "boolean"},
            "score": {"kind": "numeric", "max_null_rate": 0.3},
            "seats": {"kind": "integer"},
        },
        "model": {"min_auc": 0.65, "min_slice_auc": 0.55, "min_slice_rows": 25},
        "slices": [
            {"name": "addon", "column": "has_addon", "equals": True},
            {"name": "plan", "column": "plan", "values": "all"},
            {"name": "usage", "column": "usage", "bands": {"low": [0, 20], "high": [20, None]}},
        ],
        "invariances": [
            {
                "name": "premium_lowers_churn",
                "feature": "plan",
                "from": "basic",
                "to": "premium",
                "direction": "decrease",
                "min_fraction": 0.9,
            },
            {
                "name": "usage_lowers_churn",
                "feature": "usage",
                "step": 10,
                "direction": "decrease",
                "min_fraction": 0.8,
            },
        ],
    }
)


def accounts(n: int, seed: int) -> pd.DataFrame:
    """Validated rows of the accounts table (dtypes as the contract leaves them)."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "premium"], size=n, p=[0.5, 0.3, 0.2])
    usage = rng.uniform(0, 60, size=n)
    addon = rng.random(n) < 0.3
    logit = 1.0 - 1.8 * (plan == "premium") - 0.6 * (plan == "plus") - 0.06 * usage + 0.9 * addon
    left = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    score = rng.normal(0, 1, size=n)
    score[rng.random(n) < 0.15] = np.nan
    return pd.DataFrame(
        {
            "account_id": pd.array([f"a{seed}-{i}" for i in range(n)], dtype="string"),
            "plan": pd.array(plan, dtype="string"),
            "usage": usage,
            "has_addon": pd.array(addon, dtype="boolean"),
            "score": score,
            "seats": pd.array(rng.integers(1, 50, size=n), dtype="Int64"),
            "left": pd.array(left, dtype="Int64"),
            # a column the spec does not name: never a model input
            "note": pd.array(["x"] * n, dtype="string"),
        }
    )


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return accounts(4000, seed=1), accounts(1500, seed=2)


@pytest.fixture(scope="module")
def hgb(frames) -> training.TrainedModel:
    train_rows, _ = frames
    return training.train(train_rows, training.TrainingConfig(max_iter=80), SPEC)


def test_the_shipped_spec_builds_todays_feature_steps():
    ct = features.build_feature_transformer(default_spec())
    assert [(name, type(t).__name__, cols) for name, t, cols in ct.transformers] == [
        ("hour_cyclical", "CyclicalEncoder", ["last_login_hour"]),
        ("contract_onehot", "Pipeline", ["contract_type"]),
        ("category_frequency", "FrequencyEncoder", ["contract_type", "region"]),
        ("signup_days", "DaysSinceReference", ["signup_date"]),
        ("enterprise", "BooleanToFloat", ["is_enterprise"]),
        ("numeric", "NumericPassthrough", ["tenure_months", "monthly_spend", "support_tickets"]),
    ]
    assert ct.transformers[0][1].period == 24 and isinstance(ct.transformers[0][1].period, int)
    assert features.feature_ranges(default_spec()) == {
        "last_login_hour_sin": (-1.0, 1.0),
        "last_login_hour_cos": (-1.0, 1.0),
        "contract_type_freq": (0.0, 1.0),
        "region_freq": (0.0, 1.0),
        "contract_type_monthly": (0.0, 1.0),
        "contract_type_annual": (0.0, 1.0),
        "contract_type_multi-year": (0.0, 1.0),
        "is_enterprise": (0.0, 1.0),
    }
    assert features.native_category_indices(default_spec()) == []
    resolved = model_checks.ModelCheckConfig().resolved(default_spec())
    assert (resolved.min_auc, resolved.min_slice_auc, resolved.min_slice_rows) == (0.80, 0.74, 30)
    assert resolved.min_invariance_fraction is None  # each invariance's own: 0.90 here
    assert model_checks.check_names(default_spec()) == [
        "feature_invariants",
        "holdout_auc",
        "slice_auc",
        "contract_invariance",
        "prediction_coverage",
    ]


def test_a_spec_pipeline_takes_only_its_columns(frames, hgb):
    train_rows, holdout = frames
    assert list(hgb.pipeline.feature_names_in_) == list(SPEC.feature_names)
    steps = {name: cols for name, _, cols in hgb.pipeline.named_steps["features"].transformers}
    assert steps == {
        "native_categories": ["plan"],
        "boolean": ["has_addon"],
        "numeric": ["usage", "score", "seats"],
    }
    # scoring picks the fitted columns out of any frame, whatever else it holds or its order
    shuffled = holdout[list(reversed(holdout.columns))].assign(extra=1.0)
    np.testing.assert_array_equal(
        training.predict_proba(hgb.pipeline, shuffled),
        training.predict_proba(hgb.pipeline, holdout),
    )
    with pytest.raises(ValueError, match=r"missing model input column\(s\) \['usage'\]"):
        training.predict_proba(hgb.pipeline, holdout.drop(columns=["usage"]))
    with pytest.raises(ValueError, match="no target column 'churned'"):
        training.train(
            train_rows.rename(columns={"left": "x"}), training.TrainingConfig(), default_spec()
        )


def test_native_categoricals_reach_gradient_boosting_as_categories(frames, hgb):
    _, holdout = frames
    estimator = hgb.pipeline.named_steps["model"]
    assert estimator.get_params()["categorical_features"] == [0]
    assert estimator.is_categorical_.tolist() == [True, False, False, False, False]
    codes = hgb.pipeline.named_steps["features"].transform(
        holdout.head(4).assign(plan=["basic", "premium", "weekly", None])[list(SPEC.feature_names)]
    )[:, 0]
    # allowed values get their position in 'allowed'; unknown and missing are NaN (missing)
    np.testing.assert_array_equal(codes, [0.0, 2.0, np.nan, np.nan])
    p = training.predict_proba(hgb.pipeline, holdout)
    premium = (holdout["plan"] == "premium").to_numpy()
    assert p[premium].mean() < p[~premium].mean() - 0.1


def test_logistic_regression_one_hot_encodes_native_categoricals(frames):
    train_rows, holdout = frames
    lr = training.train(train_rows, training.TrainingConfig(estimator="logistic_regression"), SPEC)
    names = list(lr.pipeline.named_steps["features"].get_feature_names_out())
    assert names[:3] == ["plan_basic", "plan_plus", "plan_premium"]
    assert "plan" not in names
    outcomes = model_checks.run_model_checks(
        lr.pipeline, holdout, model_checks.ModelCheckConfig(n_resamples=200), SPEC
    )
    assert [o.name for o in outcomes if not o.passed] == []
    ranges = outcomes[0].metadata["features_checked"]
    assert ranges == 4  # three one-hot columns and the boolean


def test_spec_slices_and_invariances_are_evaluated_and_named_from_the_spec(frames, hgb):
    _, holdout = frames
    outcomes = model_checks.run_model_checks(
        hgb.pipeline, holdout, model_checks.ModelCheckConfig(n_resamples=200), SPEC
    )
    by_name = {o.name: o for o in outcomes}
    assert [o.name for o in outcomes] == [
        records.FEATURE_INVARIANTS,
        records.HOLDOUT_AUC,
        records.SLICE_AUC,
        "premium_lowers_churn",
        "usage_lowers_churn",
        records.PREDICTION_COVERAGE,
    ]
    assert [o.name for o in outcomes] == model_checks.check_names(SPEC)
    assert [o.name for o in outcomes if not o.passed] == [], {
        o.name: o.description for o in outcomes
    }
    # thresholds from the spec's model section
    assert by_name[records.HOLDOUT_AUC].metadata["threshold"] == 0.65
    assert by_name[records.SLICE_AUC].metadata["threshold"] == 0.55
    table = by_name[records.SLICE_AUC].table
    assert (
        list(table["slice"])
        == SPEC.slice_names()
        == [
            "addon",
            "plan:basic",
            "plan:plus",
            "plan:premium",
            "usage:low",
            "usage:high",
        ]
    )
    masks = slices.default_slices(holdout, SPEC)
    assert int(masks["addon"].sum()) == int(holdout["has_addon"].sum())
    assert int(masks["usage:low"].sum()) == int((holdout["usage"] < 20).sum())
    assert (
        table.set_index("slice").loc["plan:premium", "rows"] == (holdout["plan"] == "premium").sum()
    )
    premium = by_name["premium_lowers_churn"]
    assert premium.metadata["fraction_lowered"] > 0.9
    assert premium.metadata["threshold"] == 0.9
    assert premium.description.startswith("basic -> premium lowers predicted churn")
    usage = by_name["usage_lowers_churn"]
    assert usage.metadata["threshold"] == 0.8 and usage.metadata["rows"] == len(holdout)
    assert usage.description.startswith("usage +10 lowers")


def test_run_config_thresholds_override_the_spec(frames, hgb):
    _, holdout = frames
    strict = model_checks.ModelCheckConfig(
        n_resamples=200, min_auc=0.99, min_invariance_fraction=1.0
    )
    outcomes = model_checks.run_model_checks(hgb.pipeline, holdout, strict, SPEC)
    failed = {o.name for o in outcomes if not o.passed}
    assert {records.HOLDOUT_AUC, "premium_lowers_churn", "usage_lowers_churn"} <= failed
    by_name = {o.name: o for o in outcomes}
    assert by_name["usage_lowers_churn"].metadata["threshold"] == 1.0


def test_an_inverted_invariance_fails_with_its_evidence(frames, hgb):
    _, holdout = frames
    inverted = parse_spec(
        {
            **SPEC.to_dict(),
            "invariances": [
                {
                    "name": "premium_raises_churn",
                    "feature": "plan",
                    "from": "basic",
                    "to": "premium",
                    "direction": "increase",
                }
            ],
        }
    )
    outcome = model_checks.invariance_check(
        hgb.pipeline, holdout, model_checks.ModelCheckConfig(), inverted, inverted.invariances[0]
    )
    assert outcome.name == "premium_raises_churn" and not outcome.passed
    assert outcome.metadata["fraction_raised"] < 0.1
    assert outcome.metadata["rows_not_raised"] > 0.9 * len(holdout)
    # the evidence names rows by the spec's id column
    assert list(outcome.table.columns) == ["account_id", "p_basic", "p_premium"]
    assert outcome.table["account_id"].isin(holdout["account_id"]).all()


def test_a_step_invariance_skips_rows_where_the_feature_is_missing(frames, hgb):
    _, holdout = frames
    on_score = parse_spec(
        {
            **SPEC.to_dict(),
            "invariances": [
                {"name": "score_moves", "feature": "score", "step": 1, "direction": "increase"}
            ],
        }
    )
    outcome = model_checks.invariance_check(
        hgb.pipeline, holdout, model_checks.ModelCheckConfig(), on_score
    )
    assert outcome.name == "score_moves"
    assert outcome.metadata["rows"] == int(holdout["score"].notna().sum()) < len(holdout)
    assert not outcome.passed  # score is noise: no stated direction holds for 90% of rows


def test_train_and_check_logs_a_fraction_per_invariance(frames):
    train_rows, holdout = frames
    checked = model_checks.train_and_check(
        pd.concat([train_rows, holdout]),
        holdout,
        training.TrainingConfig(estimator="logistic_regression"),
        model_checks.ModelCheckConfig(n_resamples=200),
        SPEC,
    )
    assert checked.trained.n_train_rows == len(train_rows)
    assert checked.failed == []
    assert checked.metrics["invariance_fraction"] > 0.9
    assert checked.metrics["invariance_fraction/usage_lowers_churn"] > 0.8


def test_a_model_logged_through_the_registry_carries_its_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames, hgb
):
    from churn_platform.resources.mlflow_registry import MlflowRegistry, _fluent_store

    train_rows, _ = frames
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("CHURN_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for the fluent reads below
    registry = MlflowRegistry(tracking_uri=uri)
    registered = registry.log_and_register(
        hgb.pipeline,
        spec=SPEC,
        input_example=training.model_inputs(train_rows, SPEC),
        params={"estimator": "hist_gradient_boosting"},
        metrics={"n_train_rows": float(len(train_rows))},
        tags={"origin": "test_spec_model"},
        json_artifacts={},
        run_name="spec-model",
    )
    # read back from the store, not from anything this process remembers
    # (inside _fluent_store: an earlier test in the process may have pointed MLflow elsewhere)
    with _fluent_store(uri):
        info = mlflow.models.get_model_info(f"runs:/{registered.run_id}/model")
    assert json.loads(info.metadata[MODEL_METADATA_KEY]) == SPEC.to_dict()
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(SPEC.feature_names)
    assert registry.spec_of_version(registered.version) == SPEC
    assert registry.spec_of_version(registered.version).hash == SPEC.hash
    # feature order survives the MLmodel file (MLflow sorts its keys: the spec is JSON text)
    assert registry.spec_of_version(registered.version).feature_names == SPEC.feature_names
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version(registry.model_name, registered.version)
    assert version.tags[records.TAG_SPEC_HASH] == SPEC.hash
    assert version.tags["origin"] == "test_spec_model"
    run = client.get_run(registered.run_id)
    assert run.data.tags[records.TAG_SPEC_HASH] == SPEC.hash
    with _fluent_store(uri):
        logged = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/spec.yaml")
    assert parse_spec(logged) == SPEC
    with pytest.raises(ValueError, match=r"feature column\(s\) \['usage'\]"):
        registry.log_and_register(
            hgb.pipeline,
            spec=SPEC,
            input_example=train_rows.drop(columns=["usage"]),
            params={},
            metrics={},
            tags={},
            json_artifacts={},
            run_name="bad",
        )


def test_definitions_name_one_check_per_spec_invariance_and_refuse_a_clash():
    from churn_platform import settings
    from churn_platform.defs import model

    names = list(model.model_check_descriptions(SPEC))
    assert names == model_checks.check_names(SPEC)
    assert "premium" in model.model_check_descriptions(SPEC)["premium_lowers_churn"]
    clash = parse_spec(
        {
            **SPEC.to_dict(),
            "invariances": [
                {"name": "holdout_auc", "feature": "usage", "step": 1, "direction": "decrease"}
            ],
        }
    )
    with pytest.raises(settings.SettingsError, match="'holdout_auc'.*rename them"):
        model.model_check_descriptions(clash)
    # another spec is another code version: the model goes stale when the spec changes
    assert model.training_code_version(SPEC) != model.training_code_version(default_spec())


def test_definitions_load_the_checks_of_the_spec_churn_spec_names(tmp_path: Path):
    """The spec is part of the model's configuration: the definitions built from it name its
    checks (in this process: nothing is read at import)."""
    from churn_platform.config import load_config
    from churn_platform.definitions import build_definitions
    from churn_platform.settings import SettingsError

    spec_file = tmp_path / "accounts.yaml"
    spec_file.write_text(SPEC.to_yaml())

    def challenger(spec_path: str) -> Any:
        config = load_config({"CHURN_SPEC": spec_path, "CHURN_HOME": str(tmp_path)})
        return build_definitions(config).resolve_assets_def("challenger_model")

    seen, shipped = challenger(str(spec_file)), challenger("")
    assert [c.name for c in seen.check_specs] == model_checks.check_names(SPEC)
    assert [c.name for c in shipped.check_specs] == model_checks.check_names(default_spec())
    assert seen.code_versions_by_key[seen.key] != shipped.code_versions_by_key[shipped.key]
    broken = tmp_path / "broken.yaml"
    broken.write_text(SPEC.to_yaml().replace("kind: boolean", "kind: flag"))
    with pytest.raises(SettingsError, match=r"(?s)CHURN_SPEC=.*unknown kind 'flag'"):
        challenger(str(broken))
