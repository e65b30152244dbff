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
from pathlib import Path
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
    """A scored week: the table, its checks and the asset's metadata (plain values).

    ``table`` is a pandas DataFrame (pandas engine), or on the Spark engine the Spark frame
    reading ``staged``: the week's Parquet file, written by Spark in a staging folder, which
    the asset stores as it is. ``top``: the first rows, best first.
    """

    table: Any
    checks: list[CheckOutcome]
    metadata: dict[str, Any]
    top: pd.DataFrame
    staged: Path | None = None

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
    staging: Path,
) -> WeekScores:
    """``score_week`` for a week validated on Spark, where the rows lie: the champion scores
    the Spark frame (``spark_udf``), Spark ranks it and writes the table as one Parquet file
    under ``staging`` (``core.scores_spark``), and the checks run on that file. The driver
    gets counts, the first offending ids, the deciles, the histogram over the previous
    week's bins, the first rows and the serving-parity sample, never the week's rows."""
    from churn_platform.core import scores_spark

    frame, id_column = week.frame, week.id_column
    _refuse_lacking(week, scorer, list(frame.columns))
    identity = _identity(week, scorer, run)
    staged = scores_spark.write_ranked(scorer.score_spark(frame), id_column, identity, staging)
    table = frame.sparkSession.read.parquet(str(staged))
    last = None if previous is None else previous[sc.PROBABILITY].to_numpy(dtype=float)
    checks = [
        scores_spark.rows_check(table, frame, id_column),
        scores_spark.unique_check(table),
        scores_spark.range_check(table),
        sc.parity_check(*_spark_parity(week, scorer, table, settings), settings.parity_tolerance),
        scores_spark.psi_check(table, last, sc.previous_week(week.week), settings.psi_threshold),
    ]
    mean, deciles, top = scores_spark.summary(table)
    rows = int(deciles["customers"].sum())
    metadata = _metadata(week, scorer, rows, round(mean, 6) if rows else 0.0, deciles)
    return WeekScores(table, checks, metadata, top, staged)


def _spark_parity(
    week: ValidatedWeek, scorer: SparkScorer, table: SparkFrame, settings: sc.ScoresSettings
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The serving-parity sample of a Spark week: ``serving_sample`` scored rows picked by a
    hash of the entity id (the same rows every run), their batch probabilities and the
    served ones of the validated rows with those ids."""
    from pyspark.sql import functions as F

    from churn_platform.core.engines.spark_mapping import quoted

    id_column = week.id_column
    by_hash = table.orderBy(F.xxhash64(F.col(sc.ENTITY)), sc.ENTITY)
    picked = by_hash.select(sc.ENTITY, sc.PROBABILITY).limit(settings.serving_sample).collect()
    ids = [str(r[0]) for r in picked]
    rows = week.frame.where(quoted(id_column).cast("string").isin(ids)).toPandas()
    rows = rows.set_index(rows[id_column].astype(str))
    kept = [i for i, r in enumerate(picked) if str(r[0]) in rows.index]  # an extra id: no row
    rows = rows.loc[[ids[i] for i in kept]].reset_index(drop=True)
    served = np.asarray(scorer.score_as_served(rows), dtype=float)
    batch = np.array([picked[i][1] for i in kept], dtype=float)
    return [ids[i] for i in kept], batch, served


def _identity(week: ValidatedWeek, scorer: Scorer, run: tuple[str, str]) -> sc.ScoreIdentity:
    return sc.ScoreIdentity(
        week.week, scorer.version, week.version, scorer.spec.short_hash, run[0], run[1]
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
    identity = _identity(week, scorer, run)
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
    return WeekScores(table, checks, week_metadata(week, table, scorer), table.head(10))


def week_metadata(week: ValidatedWeek, table: pd.DataFrame, scorer: Scorer) -> dict[str, Any]:
    """What the UI shows for a scored week (``deciles`` is a frame, the rest plain)."""
    mean = round(float(table[sc.PROBABILITY].mean()), 6) if len(table) else 0.0
    return _metadata(week, scorer, len(table), mean, sc.deciles(table))


def _metadata(
    week: ValidatedWeek, scorer: Scorer, rows: int, mean: float, deciles: pd.DataFrame
) -> dict[str, Any]:
    warned = [r.name for r in week.results if not r.passed]
    return {
        "week": week.week,
        "engine": week.engine,
        "rows": rows,
        "model_version": scorer.version,
        "data_version": week.version,
        "spec_hash": scorer.spec.short_hash,
        "source": week.location,
        "rules_passed": f"{sum(r.passed for r in week.results)}/{len(week.results)}",
        "warnings": ", ".join(warned) or "none",
        "mean_probability": mean,
        "deciles": deciles,
    }


def failure_text(week: str, failed: list[CheckOutcome]) -> str:
    """Why a scored week is not published."""
    return (
        f"week {week}: {len(failed)} check(s) failed: "
        + "; ".join(f"{c.name} ({c.description})" for c in failed)
        + f". {NOT_SCORED}"
    )
