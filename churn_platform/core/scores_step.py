"""``churn_scores``' decisions: a week's rows through the data contract, scored, checked.

``validate_week`` runs the same contract as ``validated_churn_data`` (``core.contract``,
declared from the spec) on the week's mapped rows: a week that breaks a blocking rule is
not scored (``ScoresError`` names the rules). ``score_week`` scores the validated rows with
a ``Scorer`` (the champion, loaded by a resource), builds the table (``core.scores``) and
runs its checks, the serving-path sample among them. The asset (``defs/weekly_scores.py``)
reads the source, writes the table and reports. Nothing here imports Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from churn_platform.core import contract
from churn_platform.core import scores as sc
from churn_platform.core.data_step import missing_columns
from churn_platform.core.mapping import MappedFrame, describe_missing
from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.spec import Spec

NOT_SCORED = "The week is not scored; its earlier scores, if any, are untouched."


class ScoresError(Exception):
    """A week cannot be scored; the message names the week, the rule, column or setting."""


class Scorer(Protocol):
    """A registered model version ready to score: batch and as a model server would."""

    @property
    def version(self) -> str:
        """The registered version's number."""
        ...

    @property
    def spec(self) -> Spec:
        """The spec the version was trained with (its features, id column, hash)."""
        ...

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """P(churn) of every row of a validated frame (the batch path)."""
        ...

    def score_as_served(self, frame: pd.DataFrame) -> np.ndarray:
        """P(churn) of the rows sent as a client sends them, through the server's code."""
        ...


@dataclass(frozen=True, eq=False)
class ValidatedWeek:
    """A week's rows after the contract: typed frame, data version, every rule's result."""

    week: str
    frame: pd.DataFrame
    version: str
    results: list[contract.RuleResult]
    location: str
    id_column: str


def validate_week(mapped: MappedFrame, spec: Spec, week: str, location: str) -> ValidatedWeek:
    """The week's mapped rows checked by ``spec``'s contract; ``ScoresError`` for a week
    without rows, lacking spec columns or breaking a blocking rule (each named)."""
    frame = mapped.frame
    where = f"week {week} ({location})"
    if len(frame) == 0:
        raise ScoresError(f"{where}: no rows. {NOT_SCORED}")
    missing = missing_columns(frame, spec)
    if missing:
        raise ScoresError(
            f"{where}: column(s) {missing} of spec {spec.name!r} are missing "
            f"({describe_missing(spec, missing)}). {NOT_SCORED}"
        )
    results = contract.evaluate_contract(mapped, None, spec=spec)
    blocking = contract.blocking_failures(results)
    if blocking:
        raise ScoresError(
            f"{where}: {len(blocking)} blocking contract rule(s) failed: "
            + "; ".join(f"{r.name} ({r.message})" for r in blocking)
            + f". {NOT_SCORED}"
        )
    typed = contract.validated_frame(mapped, None, results, spec=spec)
    version = contract.data_version(mapped)
    return ValidatedWeek(week, typed, version, results, location, spec.id_column)


@dataclass(frozen=True, eq=False)
class WeekScores:
    """A scored week: the table, its checks and the asset's metadata (plain values)."""

    table: pd.DataFrame
    checks: list[CheckOutcome]
    metadata: dict[str, Any]

    @property
    def failed(self) -> list[CheckOutcome]:
        """The blocking checks that failed: the week must not be published."""
        return [c for c in self.checks if c.name in sc.BLOCKING and not c.passed]


def score_week(
    week: ValidatedWeek,
    scorer: Scorer,
    run: tuple[str, str],
    previous: pd.DataFrame | None,
    settings: sc.ScoresSettings,
) -> WeekScores:
    """Score every validated customer of ``week`` with ``scorer``; ``run`` is (run id, UTC
    time of scoring); ``previous`` the previous week's table (None when there is none)."""
    frame, model_spec = week.frame, scorer.spec
    lacking = [c for c in model_spec.feature_names if c not in frame.columns]
    if lacking:
        raise ScoresError(
            f"week {week.week}: the champion v{scorer.version} takes column(s) {lacking} that "
            f"the week's validated rows lack (its spec {model_spec.short_hash}, trained on "
            f"another table?); release a champion trained on this spec. {NOT_SCORED}"
        )
    ids = frame[week.id_column]
    probabilities = np.asarray(scorer.score(frame), dtype=float)
    identity = sc.ScoreIdentity(
        week.week, scorer.version, week.version, model_spec.short_hash, run[0], run[1]
    )
    table = sc.score_table(ids, probabilities, identity)
    sample = frame.sample(n=min(settings.serving_sample, len(frame)), random_state=0)
    positions = frame.index.get_indexer(sample.index)
    served = np.asarray(scorer.score_as_served(sample), dtype=float)
    last = None if previous is None else previous[sc.PROBABILITY].to_numpy(dtype=float)
    checks = [
        sc.rows_check(table, ids),
        sc.unique_check(table),
        sc.range_check(table),
        sc.parity_check(
            list(ids.iloc[positions]), probabilities[positions], served, settings.parity_tolerance
        ),
        sc.psi_check(
            table[sc.PROBABILITY].to_numpy(),
            last,
            sc.previous_week(week.week),
            settings.psi_threshold,
        ),
    ]
    return WeekScores(table, checks, week_metadata(week, table, scorer))


def week_metadata(week: ValidatedWeek, table: pd.DataFrame, scorer: Scorer) -> dict[str, Any]:
    """What the UI shows for a scored week (``deciles`` is a frame, the rest plain)."""
    warned = [r.name for r in week.results if not r.passed]
    return {
        "week": week.week,
        "rows": len(table),
        "model_version": scorer.version,
        "data_version": week.version,
        "spec_hash": scorer.spec.short_hash,
        "source": week.location,
        "rules_passed": f"{sum(r.passed for r in week.results)}/{len(week.results)}",
        "warnings": ", ".join(warned) or "none",
        "mean_probability": round(float(table[sc.PROBABILITY].mean()), 6) if len(table) else 0.0,
        "deciles": sc.deciles(table),
    }


def failure_text(week: str, failed: list[CheckOutcome]) -> str:
    """Why a scored week is not published."""
    return (
        f"week {week}: {len(failed)} check(s) failed: "
        + "; ".join(f"{c.name} ({c.description})" for c in failed)
        + f". {NOT_SCORED}"
    )
