"""The gate across a spec change: each model scored with its own spec's columns, same rows.

Two small specs: the champion's has a feature (``c``) the challenger's (current) spec dropped,
so the validated holdout no longer has it. The champion's column is mapped from the
snapshot's source rows through the champion's spec; when that is impossible the gate keeps
the champion with the reason instead of crashing or promoting blindly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from churn_platform.core import gate, report, slices
from churn_platform.core.records import ChallengerModel
from churn_platform.core.spec import parse_spec
from churn_platform_tests.pipeline import resource

OLD = {
    "entity_id": {"column": "id"},
    "target": {"column": "y", "positive": ["yes"], "negative": ["no"]},
    "features": {
        "a": {"kind": "numeric"},
        "b": {
            "kind": "categorical",
            "source": "B raw",
            "values": {"P": "p", "Q": "q"},
            "allowed": ["p", "q"],
        },
        "c": {"kind": "integer", "source": "C raw"},
    },
    "slices": [{"name": "plan", "column": "b", "values": "all"}],
}
NEW = {**OLD, "features": {k: v for k, v in OLD["features"].items() if k != "c"}}


@pytest.fixture(scope="module")
def world():
    old, new = parse_spec(OLD), parse_spec(NEW)
    rng = np.random.default_rng(0)
    n = 3_000
    a = rng.normal(size=n)
    b = rng.choice(["P", "Q"], n)
    c = rng.integers(0, 5, n)
    logit = 0.8 * a + 0.5 * (b == "Q") + 0.9 * (c - 2)
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    # the source table as it is stored: text ids, raw labels, the dropped column still there
    raw = pd.DataFrame(
        {"id": [f"u{i}" for i in range(n)], "a": a, "B raw": b, "C raw": c.astype(str), "y": y}
    )
    # what the current (new) spec validates: no c, mapped names, values and dtypes
    validated = pd.DataFrame(
        {
            "id": raw["id"].astype("string"),
            "a": raw["a"].astype("float64"),
            "b": raw["B raw"].str.lower().astype("string"),
            "y": pd.array((raw["y"] == "yes").astype(int), dtype="Int64"),
        }
    )
    train, holdout = validated.iloc[:2_000], validated.iloc[2_000:].sample(frac=1.0, random_state=1)
    train_old = train.assign(c=pd.array(c[:2_000], dtype="Int64"))

    def fit(frame: pd.DataFrame, columns: list[str]) -> Pipeline:
        pipe = Pipeline(
            [
                (
                    "features",
                    ColumnTransformer([("b", OneHotEncoder(), ["b"])], remainder="passthrough"),
                ),
                ("model", LogisticRegression()),
            ]
        )
        return pipe.fit(frame[columns], frame["y"].astype(int))

    return {
        "old": old,
        "new": new,
        "raw": raw,
        "holdout": holdout,
        "champion": fit(train_old, ["a", "b", "c"]),
        "challenger": fit(train, ["a", "b"]),
    }


def scores(pipe: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    # what training.predict_proba does: the columns the pipeline was fitted on
    return pipe.predict_proba(frame[list(pipe.feature_names_in_)])[:, 1]


def challenger_record() -> ChallengerModel:
    return ChallengerModel(
        "churn_model", "2", "models:/churn_model/2", "run", "0", "dv", "hh", {}, True, {}
    )


def test_each_model_is_scored_with_its_own_columns_on_the_same_rows(world):
    holdout, old, new = world["holdout"], world["old"], world["new"]
    champion_pipe, challenger_pipe = world["champion"], world["challenger"]
    assert list(challenger_pipe.feature_names_in_) == ["a", "b"]
    mine = report.inputs_for_spec(holdout, new, new, list(challenger_pipe.feature_names_in_))
    assert mine.frame is holdout and mine.derived == ()
    theirs = report.inputs_for_spec(
        holdout, new, old, list(champion_pipe.feature_names_in_), lambda: world["raw"]
    )
    assert theirs.problem is None and theirs.derived == ("c",)
    frame = theirs.frame
    # the same rows in the same order; c mapped from "C raw" (text) to the old spec's Int64
    assert list(frame["id"]) == list(holdout["id"]) and str(frame["c"].dtype) == "Int64"
    expected_c = world["raw"].set_index("id").loc[list(holdout["id"]), "C raw"].astype(int)
    assert frame["c"].astype(int).tolist() == expected_c.tolist()

    y = holdout["y"].astype(int).to_numpy()
    challenger = report.ScoredModel("challenger v2", "2", scores(challenger_pipe, holdout), "u2")
    champion = report.ScoredModel("champion v1", "1", scores(champion_pipe, frame), "u1")
    specs = report.SpecComparison(
        challenger=new, champion=old, derived=theirs.derived, champion_problem=None
    )
    cfg = gate.GateConfig(n_resamples=200)
    found = report.evaluate(
        y,
        challenger_record(),
        challenger,
        champion,
        slices.default_slices(holdout, new),
        cfg,
        specs,
    )
    # c carries signal, so the champion (with c) is better and is kept on a real comparison
    assert found.comparison is not None and found.comparison.delta < 0
    assert not found.record.promote and found.record.champion_version == "1"
    text = found.markdown
    assert "**The specs differ**" in text and "- features dropped: c" in text
    assert new.short_hash in text and old.short_hash in text
    assert "mapped from the snapshot's source rows through the champion's spec" in text
    assert list(found.slice_table["slice"]) == ["plan:p", "plan:q"]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (None, "no source rows were given"),
        (lambda raw: raw.drop(columns=["C raw"]), "have no column(s) ['C raw']"),
        (lambda raw: raw.iloc[:2_500], "holdout ids are not in the source rows"),
        (lambda raw: raw.assign(a=raw["a"] + 1.0), "differ from the holdout on 'a'"),
        (lambda raw: raw.drop(columns=["id"]), "no id column 'id'"),
        (lambda raw: 1 / 0, "re-reading the snapshot's source failed: division by zero"),
    ],
)
def test_a_champion_whose_columns_cannot_be_produced_is_kept_with_the_reason(world, source, why):
    holdout, old, new = world["holdout"], world["old"], world["new"]
    rows = None if source is None else (lambda: source(world["raw"]))
    inputs = report.inputs_for_spec(
        holdout, new, old, list(world["champion"].feature_names_in_), rows
    )
    assert inputs.frame is None and why in (inputs.problem or "")
    y = holdout["y"].astype(int).to_numpy()
    challenger = report.ScoredModel(
        "challenger v2", "2", scores(world["challenger"], holdout), "u2"
    )
    specs = report.SpecComparison(challenger=new, champion=old, champion_problem=inputs.problem)
    found = report.evaluate(
        y,
        challenger_record(),
        challenger,
        None,
        slices.default_slices(holdout, new),
        gate.GateConfig(n_resamples=50),
        specs,
        unscored_champion="1",
    )
    assert not found.record.promote and found.decision.rule == "champion_unscored"
    assert found.record.champion_version == "1"
    assert "champion v1 could not be scored" in found.record.reason and why in found.record.reason
    assert "**The champion could not be scored:**" in found.markdown
    assert "No champion is registered yet" not in found.markdown


def test_the_registry_reads_each_versions_own_spec(churn_home, world):
    """A real MLflow SQLite store: the spec logged in a version's MLmodel metadata comes back;
    a version logged without one (before models carried their spec) reads as the shipped spec."""
    import mlflow

    from churn_platform.core.spec import MODEL_METADATA_KEY, default_spec
    from churn_platform.resources.mlflow_registry import _fluent_store

    registry = resource("mlflow_registry")
    versions = []
    for metadata in ({MODEL_METADATA_KEY: world["old"].to_dict()}, None):
        with (
            _fluent_store(registry.uri()),
            mlflow.start_run(experiment_id=registry.experiment_id()),
        ):
            info = mlflow.sklearn.log_model(
                LogisticRegression().fit([[0.0], [1.0]], [0, 1]),
                name="model",
                metadata=metadata,
                serialization_format="cloudpickle",
            )
        with _fluent_store(registry.uri()):
            versions.append(str(mlflow.register_model(info.model_uri, registry.model_name).version))
    assert registry.spec_of_version(versions[0]) == world["old"]
    assert registry.spec_of_version(versions[1]) == default_spec()
