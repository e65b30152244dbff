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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from churn_platform.core import contract
from churn_platform.core import scores as sc
from churn_platform.core.data_step import missing_columns
from churn_platform.core.mapping import MappedFrame, describe_missing
from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame

    from churn_platform.core.engines.validation import Validation

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


class SparkScorer(Scorer, Protocol):
    """A ``Scorer`` that also scores a Spark frame where it lies (``mlflow.pyfunc.spark_udf``)."""

    def score_spark(self, frame: SparkFrame) -> SparkFrame:
        """(entity id, ``probability``) of every row of a validated Spark frame."""
        ...


@dataclass(frozen=True, eq=False)
class ValidatedWeek:
    """A week's rows after the contract: typed frame, data version, every rule's result.

    ``frame`` is a pandas DataFrame (``engine`` pandas) or a Spark DataFrame (``engine``
    spark, from ``core.engines.validation.validate``).
    """

    week: str
    frame: Any
    version: str
    results: list[contract.RuleResult]
    location: str
    id_column: str
    engine: str = "pandas"


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
    _refuse_blocking(results, where)
    typed = contract.validated_frame(mapped, None, results, spec=spec)
    version = contract.data_version(mapped)
    return ValidatedWeek(week, typed, version, results, location, spec.id_column)


def validated_on_engine(checked: Validation, spec: Spec, week: str, location: str) -> ValidatedWeek:
    """The week as ``core.engines.validation.validate`` checked it (the Spark engine: mapping,
    data version and contract on Spark), refused as ``validate_week`` refuses: no rows, spec
    columns missing, a blocking rule broken (the same texts and rule messages)."""
    where = f"week {week} ({location})"
    if checked.rows == 0:
        raise ScoresError(f"{where}: no rows. {NOT_SCORED}")
    missing = [c for c in spec.all_columns if c not in checked.frame.columns]
    if missing:
        raise ScoresError(
            f"{where}: column(s) {missing} of spec {spec.name!r} are missing "
            f"({describe_missing(spec, missing)}). {NOT_SCORED}"
        )
    _refuse_blocking(checked.results, where)
    return ValidatedWeek(
        week,
        checked.frame,
        checked.version,
        checked.results,
        location,
        spec.id_column,
        checked.engine,
    )


def _refuse_blocking(results: list[contract.RuleResult], where: str) -> None:
    blocking = contract.blocking_failures(results)
    if blocking:
        raise ScoresError(
            f"{where}: {len(blocking)} blocking contract rule(s) failed: "
            + "; ".join(f"{r.name} ({r.message})" for r in blocking)
            + f". {NOT_SCORED}"
        )


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
    frame = week.frame
    _refuse_lacking(week, scorer, list(frame.columns))
    ids = frame[week.id_column]
    probabilities = np.asarray(scorer.score(frame), dtype=float)
    sample = frame.sample(n=min(settings.serving_sample, len(frame)), random_state=0)
    positions = frame.index.get_indexer(sample.index)
    served = np.asarray(scorer.score_as_served(sample), dtype=float)
    parity = (list(ids.iloc[positions]), probabilities[positions], served)
    return _checked(week, scorer, (ids, ids, probabilities), parity, run, previous, settings)


def score_week_on_spark(
    week: ValidatedWeek,
    scorer: SparkScorer,
    run: tuple[str, str],
    previous: pd.DataFrame | None,
    settings: sc.ScoresSettings,
) -> WeekScores:
    """``score_week`` for a week validated on Spark: the champion scores the Spark frame
    where it lies (``spark_udf``); the (id, probability) pairs and the validated ids come
    to the driver for the table and its checks; the serving-path sample is fetched by id."""
    from churn_platform.core.engines.spark_mapping import quoted

    frame, id_column = week.frame, week.id_column
    _refuse_lacking(week, scorer, list(frame.columns))
    scored: pd.DataFrame = scorer.score_spark(frame).toPandas()
    ids = scored[id_column]
    probabilities = scored[sc.PROBABILITY].to_numpy(dtype=float)
    validated_ids = frame.select(quoted(id_column)).toPandas()[id_column]
    picked = ids.sample(n=min(settings.serving_sample, len(ids)), random_state=0).tolist()
    rows = frame.where(quoted(id_column).isin(picked)).toPandas()
    rows = rows.set_index(rows[id_column].astype(str)).loc[[str(i) for i in picked]]
    served = np.asarray(scorer.score_as_served(rows.reset_index(drop=True)), dtype=float)
    batch = pd.Series(probabilities, index=ids.astype(str)).loc[[str(i) for i in picked]]
    parity = (picked, batch.to_numpy(dtype=float), served)
    return _checked(
        week, scorer, (ids, validated_ids, probabilities), parity, run, previous, settings
    )


def _refuse_lacking(week: ValidatedWeek, scorer: Scorer, columns: list[str]) -> None:
    model_spec = scorer.spec
    lacking = [c for c in model_spec.feature_names if c not in columns]
    if lacking:
        raise ScoresError(
            f"week {week.week}: the champion v{scorer.version} takes column(s) {lacking} that "
            f"the week's validated rows lack (its spec {model_spec.short_hash}, trained on "
            f"another table?); release a champion trained on this spec. {NOT_SCORED}"
        )


def _checked(
    week: ValidatedWeek,
    scorer: Scorer,
    scores: tuple[pd.Series, pd.Series, np.ndarray],
    parity: tuple[list[Any], np.ndarray, np.ndarray],
    run: tuple[str, str],
    previous: pd.DataFrame | None,
    settings: sc.ScoresSettings,
) -> WeekScores:
    """The table of (scored ids, validated ids, probabilities) and its checks; ``parity``:
    the sample's ids, batch and served probabilities."""
    ids, validated_ids, probabilities = scores
    identity = sc.ScoreIdentity(
        week.week, scorer.version, week.version, scorer.spec.short_hash, run[0], run[1]
    )
    table = sc.score_table(ids, probabilities, identity)
    last = None if previous is None else previous[sc.PROBABILITY].to_numpy(dtype=float)
    checks = [
        sc.rows_check(table, validated_ids),
        sc.unique_check(table),
        sc.range_check(table),
        sc.parity_check(*parity, settings.parity_tolerance),
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
        "engine": week.engine,
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
