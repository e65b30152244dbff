"""``churn_scores`` on the Spark engine: the week's table ranked, written and checked on Spark.

``write_ranked`` ranks the (entity id, probability) frame the champion's ``spark_udf`` gives
(``Window`` ``row_number`` over probability descending, ties by entity id ascending: the
pandas engine's order, Spark comparing strings by their UTF-8 bytes as Python compares code
points), derives the decile from the rank as ``core.scores.score_table`` does
(``ceil(rank * 10 / n)``, in integers), adds the identity and writes one Parquet file in rank
order (the champion scores each row once). The checks then read that file on Spark and
bring only small answers to the driver: counts, the first offending ids, the decile summary,
the score histogram over the previous week's bins, the first rows. ``DRIVER_FETCH_LIMIT``
bounds every such answer except the serving-parity sample (``ScoresSettings.serving_sample``).
Nothing here imports Dagster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn_platform.core import scores as sc
from churn_platform.core.model_checks import CheckOutcome

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql import DataFrame as SparkFrame

#: The most rows any answer of the checks brings to the driver (the parity sample aside).
DRIVER_FETCH_LIMIT = sc.SAMPLE_SHOWN


def _functions() -> Any:
    from pyspark.sql import functions

    return functions


def write_ranked(
    scored: SparkFrame, id_column: str, identity: sc.ScoreIdentity, folder: Path
) -> Path:
    """The week's table (``core.scores.SCORE_COLUMNS``) written by Spark as one Parquet file
    in rank order under ``folder``; returns the file. ``scored``: (``id_column``,
    ``probability``) per validated row."""
    from pyspark.sql import Window

    F = _functions()
    rows = scored.count()  # the udf is not run for a count: the column is pruned
    base = scored.select(
        F.col(f"`{id_column}`").cast("string").alias(sc.ENTITY),
        F.col(sc.PROBABILITY).cast("double").alias(sc.PROBABILITY),
    )
    order = Window.orderBy(F.col(sc.PROBABILITY).desc(), F.col(sc.ENTITY).asc())
    rank = F.row_number().over(order).cast("long")
    ranked = base.withColumn("rank", rank).withColumn(
        "decile", F.expr(f"(rank * 10 + {max(rows, 1) - 1}) div {max(rows, 1)}").cast("long")
    )
    for name in ("week", "model_version", "data_version", "spec_hash", "run_id", "scored_at"):
        ranked = ranked.withColumn(name, F.lit(str(getattr(identity, name))))
    out = folder / "table"
    table = ranked.select(*sc.SCORE_COLUMNS).coalesce(1).sortWithinPartitions("rank")
    table.write.mode("overwrite").parquet(str(out))
    parts = sorted(out.glob("part-*.parquet"))
    if len(parts) != 1:  # an empty frame writes no part with some writers
        raise RuntimeError(f"Spark wrote {len(parts)} Parquet part(s) to {out}, expected 1")
    return parts[0]


def _small(frame: SparkFrame, limit: int = DRIVER_FETCH_LIMIT) -> list[Any]:
    """At most ``limit`` rows of ``frame`` on the driver."""
    return frame.limit(limit).collect()


def rows_check(table: SparkFrame, validated: SparkFrame, id_column: str) -> CheckOutcome:
    """``core.scores.rows_check`` on Spark: anti-joins of the distinct ids both ways."""
    F = _functions()
    expected = validated.select(F.col(f"`{id_column}`").cast("string").alias(sc.ENTITY))
    scored = table.select(sc.ENTITY)
    missing = expected.distinct().join(scored.distinct(), sc.ENTITY, "left_anti")
    extra = scored.distinct().join(expected.distinct(), sc.ENTITY, "left_anti")
    n_missing, n_extra = missing.count(), extra.count()
    return sc.rows_outcome(
        (table.count(), expected.count()),
        ([r[0] for r in _small(missing.orderBy(sc.ENTITY))] if n_missing else [], n_missing),
        ([r[0] for r in _small(extra.orderBy(sc.ENTITY))] if n_extra else [], n_extra),
    )


def unique_check(table: SparkFrame) -> CheckOutcome:
    """``core.scores.unique_check`` on Spark (the first twice-seen ids in rank order)."""
    F = _functions()
    twice = (
        table.groupBy(sc.ENTITY)
        .agg(F.count(F.lit(1)).alias("n"), F.min("rank").alias("first"))
        .where(F.col("n") > 1)
    )
    count = twice.count()
    first = [r[0] for r in _small(twice.orderBy("first").select(sc.ENTITY))] if count else []
    return sc.unique_outcome(table.count(), first, count)


def _in_range(p: Column) -> Column:
    F = _functions()
    return p.isNotNull() & ~F.isnan(p) & (p >= 0) & (p <= 1)


def range_check(table: SparkFrame) -> CheckOutcome:
    """``core.scores.range_check`` on Spark (the first offenders in rank order)."""
    F = _functions()
    bad = table.where(~_in_range(F.col(sc.PROBABILITY)))
    count = bad.count()
    rows = _small(bad.orderBy("rank").select(sc.ENTITY, sc.PROBABILITY)) if count else []
    shown = [f"{e}={float('nan') if p is None else p}" for e, p in rows]
    return sc.range_outcome(table.count(), shown, count)


def psi_check(
    table: SparkFrame, previous: np.ndarray | None, previous_week_key: str, threshold: float
) -> CheckOutcome:
    """``core.scores.psi_check`` on Spark: the week's counts over the previous week's bins."""
    F = _functions()
    if previous is None or len(previous) == 0:
        return sc.psi_outcome(None, previous_week_key, threshold)
    edges = sc.psi_edges(previous)
    p = F.col(sc.PROBABILITY)
    bucket = sum(((p >= float(e)).cast("int") for e in edges), F.lit(0))
    counts = np.zeros(len(edges) + 1, dtype=np.int64)
    for row in table.groupBy(bucket.alias("bin")).count().collect():  # <= 10 bins
        counts[int(row["bin"])] = int(row["count"])
    if counts.sum() == 0:
        return sc.psi_outcome(None, previous_week_key, threshold)
    value = sc.psi_of_counts(counts, sc.bin_counts(previous, edges))
    return sc.psi_outcome(value, previous_week_key, threshold)


def summary(table: SparkFrame) -> tuple[float, pd.DataFrame, pd.DataFrame]:
    """The mean probability, ``core.scores.deciles`` and the first ``DRIVER_FETCH_LIMIT``
    rows of the table, computed on Spark."""
    F = _functions()
    p = F.col(sc.PROBABILITY)
    mean = table.agg(F.avg(p)).collect()[0][0]
    grouped = table.groupBy("decile").agg(
        F.count(F.lit(1)).alias("customers"),
        F.min(p).alias("min"),
        F.avg(p).alias("mean"),
        F.max(p).alias("max"),
    )
    deciles = pd.DataFrame(
        [r.asDict() for r in grouped.orderBy("decile").collect()],  # <= 10 deciles
        columns=["decile", "customers", "min", "mean", "max"],
    )
    for name in ("min", "mean", "max"):
        deciles[name] = deciles[name].astype(float).round(4)
    deciles[["decile", "customers"]] = deciles[["decile", "customers"]].astype(np.int64)
    top = pd.DataFrame(
        [r.asDict() for r in _small(table.orderBy("rank"))], columns=list(sc.SCORE_COLUMNS)
    )
    return (0.0 if mean is None else float(mean)), deciles, top


def remove(folder: Path) -> None:
    """Drop a staging folder (the Parquet is published by then, or the week failed)."""
    shutil.rmtree(folder, ignore_errors=True)
