"""The weekly data assets on the Spark engine: a week's rows as Parquet datasets in the storage.

``write_snapshot`` reads a week (a file read by Spark, or rows another reader loaded), maps
it on Spark (``spark_mapping.map_on_spark``) and writes the mapped rows together with the
mapping's per-row flag columns (blank, unparseable, unmapped: what the Spark contract counts,
so ``values_parseable`` and the set rules see the same cells as the pandas engine), then
counts rows, data version and conversions in one pass over what it wrote. ``check_snapshot``
reads such a dataset back and evaluates the contract (``spark_contract.evaluate_on_spark``);
``write_validated`` writes the typed rows of a week that passed. ``holdout_rows`` selects the
holdout with ``core.holdout.holdout_mask`` itself, batch by batch on the executors
(``mapInPandas``), and ``training_rows`` samples the non-holdout rows to the training cap on
Spark: only those rows reach the driver, never the whole week.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn_platform.core import holdout, quality_report
from churn_platform.core.contract import ContractConfig
from churn_platform.core.engines.spark_contract import (
    MappingCounts,
    SparkChecked,
    evaluate_on_spark,
    mapping_counts,
)
from churn_platform.core.engines.spark_mapping import (
    FLAG,
    SparkMapped,
    map_on_spark,
    quoted,
    read_source,
)
from churn_platform.core.mapping import ColumnMapping
from churn_platform.core.records import SparkDataset
from churn_platform.core.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SNAPSHOT = "snapshot"
VALIDATED = "validated"
PROFILE_ROWS = 10_000  # rows of the quality report's column profile (the counts are all rows')
_MAPPING_FIELDS = ("columns", "dtypes", "source_dtypes", "renamed", "dropped", "value_mapped")


def dataset_key(kind: str, week: str, now: pd.Timestamp, run_id: str) -> str:
    """The storage key of a week's dataset, unique per run: ``spark/snapshots/...`` or
    ``spark/validated/...``."""
    folder = "snapshots" if kind == SNAPSHOT else kind
    return f"spark/{folder}/{kind}_{week}_{now:%Y%m%dT%H%M%S}_{run_id[:8]}.parquet"


def spark_location(path: str) -> str:
    """A storage path as Spark addresses it: an ``s3://`` URL through Hadoop's ``s3a://``."""
    return "s3a://" + path.removeprefix("s3://") if path.startswith("s3://") else path


def as_spec_types(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Rows collected from Spark with the pandas engine's dtypes (``spec.dtypes``): Spark's
    nullable longs arrive as floats, strings and nullable booleans as objects."""
    out = frame.copy()
    for col, dtype in spec.dtypes.items():
        if col in out.columns:
            if dtype.startswith("datetime64"):
                out[col] = pd.to_datetime(out[col]).astype(dtype)
            else:
                out[col] = out[col].astype(dtype)
    return out


@dataclass(frozen=True, eq=False)
class SnapshotOnSpark:
    """A week mapped on Spark: its dataset (None when spec columns are missing: nothing is
    written), the missing spec columns, the columns after mapping, the conversion counts,
    unmapped values and a five-row preview in the spec's dtypes."""

    dataset: SparkDataset | None
    rows: int
    missing: list[str]
    columns: list[str]
    counts: MappingCounts | None
    preview: pd.DataFrame

    def __len__(self) -> int:
        return self.rows


def write_snapshot(
    spark: SparkSession,
    source: Any,
    mapping: ColumnMapping | dict[str, Any] | None,
    spec: Spec,
    week: str,
    location: str,
) -> SnapshotOnSpark:
    """Map ``source`` (a file path Spark reads, or a pandas/Spark frame) onto ``spec`` and
    write it, flags included, as a Parquet dataset at ``location``; count what was written."""
    mapped = map_on_spark(read_source(spark, source), mapping, spec=spec, required=())
    columns = [str(c) for c in mapped.frame.columns]
    missing = [c for c in spec.all_columns if c not in mapped.columns]
    if missing:  # the snapshot's check reports them; nothing is kept
        preview = mapped.frame.limit(5).toPandas()
        return SnapshotOnSpark(None, int(mapped.full.count()), missing, columns, None, preview)
    mapped.full.write.mode("overwrite").parquet(spark_location(location))
    accounting: dict[str, Any] = {f: getattr(mapped, f) for f in _MAPPING_FIELDS}
    accounting.update(id_column=mapped.id_column, lost=mapped.lost)
    placed = SparkDataset(SNAPSHOT, location, week, 0, "", spec.short_hash, accounting)
    written = open_snapshot(spark, placed)
    counts = mapping_counts(written, spec)
    dataset = SparkDataset(
        SNAPSHOT, location, week, counts.rows, counts.version, spec.short_hash, accounting
    )
    preview = as_spec_types(written.frame.limit(5).toPandas(), spec)
    return SnapshotOnSpark(dataset, counts.rows, [], columns, counts, preview)


def open_snapshot(spark: SparkSession, dataset: SparkDataset) -> SparkMapped:
    """A snapshot dataset read back as the ``SparkMapped`` the contract evaluates."""
    if dataset.kind != SNAPSHOT:
        raise ValueError(f"{dataset.path} holds {dataset.kind} rows, not a snapshot")
    full = spark.read.parquet(spark_location(dataset.path))
    frame = full.select(*[quoted(c) for c in full.columns if not c.startswith(FLAG)])
    m = dataset.mapping
    return SparkMapped(
        full,
        frame,
        list(m["columns"]),
        dict(m["dtypes"]),
        dict(m["source_dtypes"]),
        dict(m["renamed"]),
        list(m["dropped"]),
        list(m["value_mapped"]),
        str(m["id_column"]),
        list(m["lost"]),
    )


@dataclass(frozen=True, eq=False)
class CheckedWeek:
    """A snapshot dataset after the contract: the results (``checked``), the typed rows in
    the spec's column order (a lazy Spark frame) and a profile sample (pandas)."""

    checked: SparkChecked
    typed: DataFrame
    sample: pd.DataFrame


def check_snapshot(
    spark: SparkSession, dataset: SparkDataset, config: ContractConfig | None, spec: Spec
) -> CheckedWeek:
    """Evaluate ``spec``'s contract on a snapshot dataset (the same rule names, failing counts
    and pass/fail as the pandas engine on the same rows)."""
    mapped = open_snapshot(spark, dataset)
    checked = evaluate_on_spark(mapped, config, spec=spec)
    names = [str(c) for c in mapped.frame.columns]
    order = [c for c in spec.all_columns if c in names] + [
        c for c in names if c not in spec.all_columns
    ]
    typed = mapped.frame.select(*[quoted(c) for c in order])
    sample = as_spec_types(typed.limit(PROFILE_ROWS).toPandas(), spec)
    return CheckedWeek(checked, typed, sample)


def quality_text(week: CheckedWeek, spec: Spec, version: str) -> str:
    """The week's quality report: the rules' results and the mapping's counts over every
    row, the column profile over the first ``PROFILE_ROWS`` rows (said in the report)."""
    summary = {
        **quality_report.profile_frame(week.sample),
        "rows": week.checked.rows,
        "source": {"profiled_rows": len(week.sample), "engine": "spark"},
        "mapping": week.checked.summary,
        "spec": {"name": spec.name, "spec_hash": spec.short_hash},
    }
    return quality_report.render_quality_report(week.checked.results, summary, version)


def write_validated(
    week: CheckedWeek, spec: Spec, name: str, version: str, location: str
) -> tuple[SparkDataset, float]:
    """Write the typed rows of a week that passed at ``location``: its dataset and churn rate."""
    week.typed.write.mode("overwrite").parquet(spark_location(location))
    from pyspark.sql import functions as F

    written = week.typed.sparkSession.read.parquet(spark_location(location))
    found = written.agg(
        F.count(F.lit(1)).alias("rows"), F.avg(quoted(spec.target_column)).alias("rate")
    ).collect()[0]
    rate = 0.0 if found["rate"] is None else float(found["rate"])
    dataset = SparkDataset(VALIDATED, location, name, int(found["rows"]), version, spec.short_hash)
    return dataset, rate


def _rows(spark: SparkSession, dataset: SparkDataset) -> DataFrame:
    if dataset.kind != VALIDATED:
        raise ValueError(f"{dataset.path} holds {dataset.kind} rows, not validated ones")
    return spark.read.parquet(spark_location(dataset.path))


def _pick(
    batches: Iterator[pd.DataFrame], id_column: str, whole: bool, fraction: float, salt: str
) -> Iterator[pd.DataFrame]:
    """The holdout rows of each batch, by ``core.holdout.holdout_mask`` itself."""
    for batch in batches:
        ids = batch[id_column].astype("Int64") if whole else batch[id_column]
        yield batch[holdout.holdout_mask(ids, fraction, salt)]


def holdout_rows(
    spark: SparkSession, dataset: SparkDataset, spec: Spec, fraction: float, salt: str
) -> pd.DataFrame:
    """The holdout rows of a validated dataset, selected on the executors with
    ``holdout_mask`` (the pandas engine's ids and rows), collected in id order."""
    frame = _rows(spark, dataset)
    whole = spec.dtypes[spec.id_column] == "Int64"  # Spark longs come as int64/float64
    pick = functools.partial(
        _pick, id_column=spec.id_column, whole=whole, fraction=fraction, salt=salt
    )
    chosen = frame.mapInPandas(pick, frame.schema).orderBy(quoted(spec.id_column))
    return as_spec_types(chosen.toPandas(), spec)


def training_rows(
    spark: SparkSession,
    datasets: Sequence[SparkDataset],
    spec: Spec,
    excluded: pd.Series,
    cap: int | None,
    seed: int,
) -> tuple[pd.DataFrame, int]:
    """The labelled rows of ``datasets`` (stacked) whose entity is not in ``excluded`` (the
    holdout ids), sampled on Spark to a little over ``cap`` rows (training's stratified
    sample then takes exactly ``cap``): (the rows collected, how many were available)."""
    frames = [_rows(spark, d) for d in datasets]
    frame = functools.reduce(lambda a, b: a.unionByName(b), frames)
    frame = frame.where(quoted(spec.target_column).isNotNull())
    if len(excluded):
        ids = pd.DataFrame({"__id": excluded.astype(str).to_numpy(dtype=object)})
        held = spark.createDataFrame(ids, "__id string")
        key = quoted(spec.id_column).cast("string")
        frame = frame.join(held, key == held["__id"], "left_anti")
    available = int(frame.count())
    if cap and available > cap:  # a margin of four standard deviations of the draw
        share = min(1.0, (cap + 4 * math.sqrt(cap) + 100) / available)
        frame = frame.sample(fraction=share, seed=seed)
    return as_spec_types(frame.toPandas(), spec), available
