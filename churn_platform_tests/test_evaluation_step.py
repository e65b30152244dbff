"""core.evaluation_step against an in-memory registry: which models are scored, with which
columns, and what the report's metadata says of a champion that is absent or unscorable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn_platform.core import evaluation_step as step
from churn_platform.core import gate
from churn_platform.core.records import CHAMPION, ChallengerModel
from churn_platform.core.spec import Spec, parse_spec

NEW = {
    "entity_id": {"column": "id"},
    "target": {"column": "y", "positive": ["yes"], "negative": ["no"]},
    "features": {"a": {"kind": "numeric"}},
}
OLD = {**NEW, "features": {"a": {"kind": "numeric"}, "c": {"kind": "integer", "source": "C raw"}}}


class Fitted:
    """A fitted model's surface: its columns, and a score that grows with ``a``."""

    def __init__(self, columns: list[str]) -> None:
        self.feature_names_in_ = np.array(columns, dtype=object)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = 1 / (1 + np.exp(-frame["a"].to_numpy(dtype=float)))
        return np.column_stack([1 - p, p])


class Store:
    """Registered versions: version -> (spec, columns), and the champion alias."""

    def __init__(self, versions: dict[str, tuple[Spec, list[str]]], champion: str | None):
        self.versions, self.champion = versions, champion

    def alias_version(self, alias: str) -> str | None:
        return self.champion if alias == CHAMPION else None

    def spec_of_version(self, version: str) -> Spec:
        return self.versions[version][0]

    def load_model(self, version: str) -> Any:
        return Fitted(self.versions[version][1])

    def version_run_url(self, version: str) -> str:
        return f"http://mlflow/v{version}"


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-2 * a))).astype(int)
    return pd.DataFrame(
        {"id": pd.array([f"u{i}" for i in range(400)], dtype="string"), "a": a, "y": y}
    )


def record() -> ChallengerModel:
    return ChallengerModel("m", "2", "models:/m/2", "run", "0", "dv", "hh", {}, True, {})


def no_rows() -> pd.DataFrame:
    raise OSError("source gone")


def test_without_a_champion_only_the_challenger_is_scored(holdout):
    new = parse_spec(NEW)
    store = Store({"2": (new, ["a"])}, champion=None)
    scoring = step.score_models(store, holdout, new, "2", no_rows)
    assert scoring.challenger.label == "challenger v2"
    assert scoring.champion is None and scoring.unscored_champion is None
    assert scoring.champion_warning is None
    found = step.judge(holdout, new, record(), scoring, gate.GateConfig())
    meta = step.report_metadata(found, scoring, new, len(holdout))
    assert meta["champion_version"] == meta["champion_spec_hash"] == "none"
    assert meta["challenger_run"] == "http://mlflow/v2" and "champion_run" not in meta
    assert meta["holdout_rows"] == 400 and meta["spec_differences"] == "none"
    gate_meta = step.gate_metadata(found, gate.GateConfig())
    assert gate_meta["minimum_detectable_gain"] == "n/a (no champion)"


def test_a_champion_that_is_the_challenger_is_not_compared_with_itself(holdout):
    new = parse_spec(NEW)
    scoring = step.score_models(Store({"2": (new, ["a"])}, "2"), holdout, new, "2", no_rows)
    assert scoring.champion_version is None and scoring.champion is None


def test_a_scored_champion_gets_its_own_link(holdout):
    new = parse_spec(NEW)
    store = Store({"1": (new, ["a"]), "2": (new, ["a"])}, champion="1")
    scoring = step.score_models(store, holdout, new, "2", no_rows)
    assert scoring.champion is not None and scoring.champion.label == "champion v1"
    found = step.judge(holdout, new, record(), scoring, gate.GateConfig())
    meta = step.report_metadata(found, scoring, new, len(holdout))
    assert meta["champion_version"] == "1" and meta["champion_run"] == "http://mlflow/v1"
    assert "auc_delta" in meta


def test_an_unscorable_champion_is_kept_with_the_reason(holdout):
    old, new = parse_spec(OLD), parse_spec(NEW)
    store = Store({"1": (old, ["a", "c"]), "2": (new, ["a"])}, champion="1")
    scoring = step.score_models(store, holdout, new, "2", no_rows)
    assert scoring.unscored_champion == "1"
    assert scoring.champion_warning is not None
    assert scoring.champion_warning.startswith("champion v1 cannot be scored: ")
    assert "source gone" in scoring.champion_warning
    found = step.judge(holdout, new, record(), scoring, gate.GateConfig())
    assert not found.record.promote
    meta = step.report_metadata(found, scoring, new, len(holdout))
    assert meta["champion_version"] == "1" and meta["champion_spec_hash"] == old.short_hash
    assert "champion_run" not in meta


def test_a_challenger_without_its_columns_stops_the_step(holdout):
    old, new = parse_spec(OLD), parse_spec(NEW)
    store = Store({"2": (old, ["a", "c"])}, champion=None)
    with pytest.raises(step.UnscorableChallenger, match="challenger v2 cannot be scored on the"):
        step.score_models(store, holdout, new, "2", no_rows)


def test_fitted_columns_fall_back_to_the_spec():
    assert step.fitted_columns(object(), parse_spec(OLD)) == ["a", "c"]
    assert step.fitted_columns(Fitted(["c", "a"]), parse_spec(OLD)) == ["c", "a"]


def test_the_report_shows_the_interval_the_check_computed(tmp_path):
    """Issue 26.8: one bootstrap per model. The challenger's AUC interval in the report is the
    one its holdout_auc check computed at training (seeded by the training seed), not a
    second bootstrap with the gate's seed."""
    from types import SimpleNamespace

    from churn_platform.core import holdout as split
    from churn_platform.core import model_checks, model_step, records, training
    from churn_platform.core.spec import default_spec
    from churn_platform.core.synthetic import SyntheticSpec, generate

    spec = default_spec()
    train_rows, rows = split.split(generate(SyntheticSpec(n_rows=6_000, seed=3)), spec=spec)
    train_cfg = training.TrainingConfig(max_iter=40)
    # the Dagster config feeds one seed to training and to the checks' bootstrap (42)
    check_cfg = model_checks.ModelCheckConfig(n_resamples=300, seed=train_cfg.seed)
    checked = model_checks.train_and_check(train_rows, rows, train_cfg, check_cfg, spec)
    registered = SimpleNamespace(
        name="m", version="2", model_uri="models:/m/2", run_id="r", experiment_id="0"
    )
    lineage = model_step.Lineage("dv", "hh", "git", "run")
    model = model_step.challenger(registered, checked, train_cfg, lineage)

    class Registry(Store):
        def load_model(self, version: str) -> Any:
            return checked.trained.pipeline

    store = Registry({"2": (spec, [])}, champion=None)
    scoring = step.score_models(store, rows, spec, "2", no_rows)
    found = step.judge(rows, spec, model, scoring, gate.GateConfig(n_resamples=300))
    check = {o.name: o for o in checked.outcomes}[records.HOLDOUT_AUC].metadata
    shown = f"{check['auc']:.4f} | {check['auc_ci_lower']:.4f} - {check['auc_ci_upper']:.4f}"
    assert f"| challenger v2 | {shown} |" in found.markdown and "| 95% CI |" in found.markdown
    assert (model.metrics["holdout_auc_ci_lower"], model.metrics["holdout_auc_ci_upper"]) == (
        check["auc_ci_lower"],
        check["auc_ci_upper"],
    )
