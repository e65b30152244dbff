"""Weeks on the Dagster instance: the data partitions of a model, the week a run snapshots,
and the validated weeks training and the holdout read (see ``core.weeks``)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.config import ModelConfig
from churn_platform.core import holdout
from churn_platform.core import weeks as w
from churn_platform.core.engines import spark_session, spark_week
from churn_platform.core.records import SparkDataset
from churn_platform.defs.common import asset_key

PARTITION_TAG = "dagster/partition"
SNAPSHOT_ASSET = "churn_snapshot"
VALIDATED_ASSET = "validated_churn_data"


def data_partitions(model: ModelConfig) -> dg.WeeklyPartitionsDefinition:
    """The weekly partitions of ``model``'s snapshot and validated data: from
    ``CHURN_WEEKS_START`` to the current week for a real source; the synthetic world's
    calendar (``core.weeks.SYNTHETIC_WEEKS`` weeks from the start) for the synthetic one,
    whose clock is its own (the demo plays weeks ahead of today)."""
    weeks = model.weeks
    if model.own_clock:  # every week of the calendar exists, whatever the date today
        return dg.WeeklyPartitionsDefinition(
            start_date=weeks.start_date, end_date=weeks.synthetic_end, end_offset=w.SYNTHETIC_WEEKS
        )
    return dg.WeeklyPartitionsDefinition(start_date=weeks.start_date, end_offset=1)


def week_to_run(
    instance: dg.DagsterInstance, model: ModelConfig, today: dt.date | None = None
) -> str:
    """The partition a run of ``model``'s snapshot takes when none is named: the current
    week, or for the synthetic world the week after its newest snapshot (``core.weeks``)."""
    partitions = data_partitions(model)
    last = partitions.get_last_partition_key()
    assert last is not None  # the start is never in the future of its own calendar
    snapshotted = instance.get_materialized_partitions(asset_key(model, SNAPSHOT_ASSET))
    day = today or dt.datetime.now(dt.UTC).date()
    return w.week_to_run(snapshotted, model.weeks, model.own_clock, day, last)


def partition_tags(week: str) -> dict[str, str]:
    """The run tags that make a run materialise partition ``week``."""
    return {PARTITION_TAG: week}


def run_week(context: dg.AssetExecutionContext, model: ModelConfig) -> str:
    """The week an unpartitioned step of this run (holdout, training) reads: the run's
    partition when it has one, else the newest validated week on the instance."""
    tagged = context.run.tags.get(PARTITION_TAG)
    if tagged:
        return tagged
    held = context.instance.get_materialized_partitions(asset_key(model, VALIDATED_ASSET))
    if not held:
        raise dg.Failure(
            description="no week of validated_churn_data is materialised; run the retraining "
            "job (or materialise churn_snapshot and validated_churn_data for a week) first"
        )
    return max(held)


def week_metadata(
    context: dg.AssetExecutionContext, model: ModelConfig, asset: str, week: str, key: str
) -> str | None:
    """A metadata entry of ``asset``'s materialisation of partition ``week`` in this run, else
    its newest one (None when there is none). This run's first: a concurrent run may have
    materialised the same week since, and this run reads its own value."""
    wanted = asset_key(model, asset)
    own = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    found = next(
        (
            m
            for m in (r.event_log_entry.asset_materialization for r in reversed(own))
            if m is not None and m.asset_key == wanted and m.partition == week
        ),
        None,
    )
    if found is None:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=wanted, asset_partitions=[week]), limit=1
        ).records
        found = records[0].asset_materialization if records else None
    if found is None:
        return None
    entry = found.metadata.get(key)
    return str(entry.value) if entry is not None else None


def load_week(context: dg.AssetExecutionContext, model: ModelConfig, asset: str, week: str) -> Any:
    """``asset``'s stored value for partition ``week`` (this run's own when it wrote one)."""
    return context.resources.io_manager.read_partition(
        [*model.key(asset), week],
        f"{asset_key(model, asset).to_user_string()}[{week}]",
        context.run.run_id,
    )


def training_weeks(context: dg.AssetExecutionContext, model: ModelConfig) -> list[str]:
    """The validated weeks training reads for this run (``core.weeks.training_window``)."""
    week = run_week(context, model)
    held = context.instance.get_materialized_partitions(asset_key(model, VALIDATED_ASSET))
    try:
        return w.training_window(week, held, model.weeks.training_weeks)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc


def holdout_of_week(
    context: dg.AssetExecutionContext, model: ModelConfig, week: str, fraction: float, salt: str
) -> pd.DataFrame:
    """The holdout rows of validated week ``week`` (``core.holdout.holdout_mask``): from the
    stored frame, or selected on Spark from the week's Spark dataset."""
    validated = load_week(context, model, VALIDATED_ASSET, week)
    if isinstance(validated, SparkDataset):
        spark = spark_session.spark_session(model.engine)
        return spark_week.holdout_rows(spark, validated, model.spec, fraction, salt)
    mask = holdout.holdout_mask(validated[model.spec.id_column], fraction, salt)
    return validated.loc[mask].reset_index(drop=True)


def _stacked(
    model: ModelConfig, loaded: list[Any], held_out: pd.Series, cap: int | None, seed: int
) -> tuple[pd.DataFrame, int | None]:
    """The weeks' rows stacked: stored frames as they are, Spark datasets' rows less the
    held-out ids sampled to the training cap on Spark (only the sample is collected); and,
    when Spark sampled, how many labelled non-holdout rows there were to train on."""
    on_spark = [v for v in loaded if isinstance(v, SparkDataset)]
    frames = [v for v in loaded if not isinstance(v, SparkDataset)]
    available = None
    if on_spark:
        spec = model.spec
        spark = spark_session.spark_session(model.engine)
        rows, available = spark_week.training_rows(spark, on_spark, spec, held_out, cap, seed)
        for frame in frames:
            usable = frame[spec.target_column].notna() & ~frame[spec.id_column].isin(held_out)
            available += int(usable.sum())
        frames.append(rows)
    stacked = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return stacked, available


def training_frame(
    context: dg.AssetExecutionContext,
    model: ModelConfig,
    held_out: pd.Series,
    cap: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str], str, int | None]:
    """The validated rows of this run's training weeks stacked (oldest first), the weeks, and
    their data version (the week's own for one week, else a hash of each week's). Weeks the
    Spark engine validated give their rows less ``held_out`` (the holdout ids), sampled on
    Spark to ``cap`` (``TrainingConfig.max_training_rows``) with ``seed``; then the count of
    rows there were to train on (None when every row was collected)."""
    weeks = training_weeks(context, model)
    loaded = [load_week(context, model, VALIDATED_ASSET, week) for week in weeks]
    versions = [
        week_metadata(context, model, VALIDATED_ASSET, week, "data_version") or "unknown"
        for week in weeks
    ]
    frame, available = _stacked(model, loaded, held_out, cap, seed)
    if len(weeks) == 1:
        return frame, weeks, versions[0], available
    joined = ",".join(f"{week}:{version}" for week, version in zip(weeks, versions, strict=True))
    return frame, weeks, hashlib.sha256(joined.encode()).hexdigest()[:16], available
