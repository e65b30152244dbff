"""Outcomes as a declared source: the spec's ``outcomes:`` section, file / SQL / synthetic
sources, and the synthetic world's concept-drift knob."""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn_platform.core import performance as perf
from churn_platform.core.mapping import DataSourceError
from churn_platform.core.spec import SpecError, default_spec, parse_spec
from churn_platform.core.synthetic import (
    SyntheticSpec,
    churn_log_odds,
    generate,
    outcomes,
    week_start,
)
from churn_platform.resources.outcome_source import load_outcomes


def with_outcomes(section: dict[str, Any] | None, **target: Any):
    data = default_spec().to_dict()
    data["outcomes"] = section
    data["target"].update(target)
    return parse_spec(data)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"source": {"kind": "file"}}, "outcomes.source: outcomes.source kind 'file' needs 'path'"),
        (
            {"source": {"kind": "sql", "url": "sqlite://", "table": "a", "query": "b"}},
            "one of 'table', 'query'",
        ),
        ({"source": {"kind": "synthetic", "path": "x"}}, "takes ['concept_drift'], not ['path']"),
        ({"source": {"kind": "kafka"}}, "outcomes.source.kind"),
        ({"source": {"kind": "synthetic"}, "label_delay_days": -1}, "outcomes.label_delay_days"),
        ({"source": {"kind": "synthetic"}, "delay": 3}, "unknown key 'delay'"),
        ({"label_delay_days": 3}, "outcomes.source: required key 'source' is missing"),
    ],
)
def test_a_bad_outcomes_section_names_the_key(section: dict, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        with_outcomes(section)
    assert expected in str(err.value)


def test_the_shipped_spec_declares_synthetic_outcomes_with_the_default_delay() -> None:
    spec = default_spec()
    assert spec.outcomes is not None
    assert spec.outcomes.source.kind == "synthetic"
    assert spec.outcomes.label_delay_days == 30
    assert spec.outcome_columns() == ("customer_id", "churned", "known_at")
    with pytest.raises(SpecError, match="no 'outcomes' section"):
        with_outcomes(None).outcome_columns()
    with pytest.raises(DataSourceError, match="no 'outcomes' section"):
        load_outcomes(with_outcomes(None), "2026-11-08")


def test_concept_drift_changes_the_mechanism_not_the_features() -> None:
    base = generate(SyntheticSpec(n_rows=20_000, seed=4, as_of="2026-11-15"))
    drifted = generate(SyntheticSpec(n_rows=20_000, seed=4, as_of="2026-11-15", concept_drift=0.8))
    features = [c for c in base.columns if c != "churned"]
    pd.testing.assert_frame_equal(base[features], drifted[features])  # identical rows
    score = churn_log_odds(base)  # a model of the old mechanism
    old_auc = roc_auc_score(base["churned"], score)
    new_auc = roc_auc_score(drifted["churned"], score)
    assert old_auc > 0.8 and new_auc < old_auc - 0.1
    with pytest.raises(ValueError, match="concept_drift"):
        SyntheticSpec(concept_drift=1.5)


def test_synthetic_outcomes_match_every_customer_drawn_that_week() -> None:
    spec = default_spec()
    week = week_start(3)
    frame = generate(SyntheticSpec(n_rows=2000, seed=9, as_of=week))
    start, end = perf.week_bounds(week)
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame(
        {
            "entity_id": frame["customer_id"],
            "request_id": "r",
            "model_version": "1",
            "ts": start + rng.integers(0, end - start, size=len(frame)),
            "probability": 1 / (1 + np.exp(-churn_log_odds(frame))),
        }
    )
    got = load_outcomes(spec, week, {"n_rows": 2000, "seed": 9})
    assert list(got.columns) == ["entity_id", "outcome", "known_ts"]
    assert (got["known_ts"] >= end).all()
    assert (got["known_ts"] <= start + 30 * perf.SECONDS_PER_DAY).all()
    rows = perf.join_outcomes(predictions, got, week, 30).rows
    assert rows["matched"].all()
    np.testing.assert_array_equal(
        rows.sort_values("entity_id")["outcome"].to_numpy(),
        frame.sort_values("customer_id")["churned"].to_numpy(),
    )
    drifted = load_outcomes(spec, week, {"n_rows": 2000, "seed": 9}, concept_drift=1.0)
    assert not np.array_equal(drifted["outcome"], got["outcome"])


def test_the_synthetic_worlds_concept_drift_reaches_snapshots_and_outcomes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CHURN_SYNTHETIC_CONCEPT_DRIFT turns one world: the snapshot's labels and the outcomes
    (unless the outcome source overrides it)."""
    from churn_platform.config import load_config
    from churn_platform.resources.environments import data_source_for

    spec, week = default_spec(), week_start(3)
    for name, value in {"CONCEPT_DRIFT": "1", "ROWS": "2000", "SEED": "9"}.items():
        monkeypatch.setenv(f"CHURN_SYNTHETIC_{name}", value)
    monkeypatch.delenv("CHURN_SYNTHETIC_SPEND_SHIFT", raising=False)
    source = data_source_for(load_config().model().source)
    knobs = {"n_rows": 2000, "seed": 9, "concept_drift": source.concept_drift}  # type: ignore[attr-defined]
    assert knobs["concept_drift"] == 1.0
    drifted = SyntheticSpec(n_rows=2000, seed=9, as_of=week, concept_drift=1.0)
    frame = source.dated(3).snapshot(spec=spec)[0].frame
    assert frame["churned"].tolist() == generate(drifted)["churned"].tolist()
    from_world = load_outcomes(spec, week, knobs)
    assert from_world["outcome"].tolist() == outcomes(drifted, 30)["churned"].tolist()
    overridden = load_outcomes(spec, week, knobs, concept_drift=0.0)
    plain = load_outcomes(spec, week, {"n_rows": 2000, "seed": 9})
    assert overridden["outcome"].tolist() == plain["outcome"].tolist()
    assert from_world["outcome"].tolist() != plain["outcome"].tolist()


def _outcome_table(n: int = 50) -> pd.DataFrame:
    raw = outcomes(SyntheticSpec(n_rows=n, seed=2), 30)
    return pd.DataFrame(
        {
            "cust": raw["customer_id"],
            "status": np.where(raw["churned"] == 1, "Yes", "No"),
            "closed_on": raw["known_at"].dt.strftime("%Y-%m-%d"),
        }
    )


def test_a_file_of_outcomes_is_mapped_with_the_targets_values(tmp_path) -> None:
    table = _outcome_table()
    path = tmp_path / "outcomes.csv"
    table.to_csv(path, index=False)
    section = {
        "source": {"kind": "file", "path": str(path)},
        "id_column": "cust",
        "outcome_column": "status",
        "known_at_column": "closed_on",
    }
    spec = with_outcomes(section, positive=["Yes"], negative=["No"])
    got = load_outcomes(spec, "2026-11-01")
    assert got["outcome"].tolist() == (table["status"] == "Yes").astype(int).tolist()
    assert got["known_ts"].iloc[0] == int(
        pd.Timestamp(table["closed_on"].iloc[0], tz="UTC").timestamp()
    )
    table.loc[3, "status"] = "Maybe"
    table.to_csv(path, index=False)
    with pytest.raises(DataSourceError, match=r"column 'status' holds \['Maybe'\]"):
        load_outcomes(spec, "2026-11-01")
    wrong = with_outcomes({**section, "id_column": "customer"}, positive=["Yes"], negative=["No"])
    with pytest.raises(DataSourceError, match=r"lack column\(s\) \['customer'\]"):
        load_outcomes(wrong, "2026-11-01")


def test_a_sql_table_of_outcomes(tmp_path) -> None:
    table = _outcome_table()
    db = tmp_path / "outcomes.db"
    with sqlite3.connect(db) as conn:
        table.to_sql("outcomes", conn, index=False)
    section = {
        "source": {"kind": "sql", "url": f"sqlite:///{db}", "table": "outcomes"},
        "id_column": "cust",
        "outcome_column": "status",
        "known_at_column": "closed_on",
    }
    got = load_outcomes(with_outcomes(section, positive=["Yes"], negative=["No"]), "2026-11-01")
    assert len(got) == 50 and got["outcome"].sum() == (table["status"] == "Yes").sum()
    missing = {**section, "source": {**section["source"], "table": "nope"}}
    with pytest.raises(DataSourceError, match="table 'nope' not found"):
        load_outcomes(with_outcomes(missing, positive=["Yes"], negative=["No"]), "2026-11-01")
