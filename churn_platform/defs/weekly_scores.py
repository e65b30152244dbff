"""The weekly scores: ``churn_scores`` (one partition per week) and its job.

``build(model, config)`` makes both; the decisions are in ``core.scores`` and
``core.scores_step``, the week's rows come from ``resources.week_source``, the champion from
``resources.champion_scorer``, the table goes to the storage and ``scores_table``.
"""

import io
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.config import ModelConfig, PlatformConfig
from churn_platform.core import scores as sc
from churn_platform.core import scores_step as step
from churn_platform.core.engines import EngineConfig
from churn_platform.core.mapping import ColumnMapping, DataSourceError
from churn_platform.defs.common import asset_args, asset_key, check_result, md_table, model_resource
from churn_platform.defs.common import model_resource_keys as keys
from churn_platform.resources.champion_scorer import ChampionScorer
from churn_platform.resources.data_source import load_snapshot
from churn_platform.resources.storage import StorageResource
from churn_platform.resources.week_source import spark_input, week_source

ASSET = "churn_scores"
JOB = "weekly_scores"


def partitions(config: PlatformConfig) -> dg.WeeklyPartitionsDefinition:
    """Weeks from ``CHURN_SCORES_START``, Sunday to Saturday (UTC), the current week included
    (``end_offset=1``): this week's list can be made on its Monday."""
    return dg.WeeklyPartitionsDefinition(start_date=config.scores.start_date, end_offset=1)


def table_name(model: ModelConfig) -> str:
    """The database table of ``model``'s scores: ``<model>_scores`` (``churn_scores``)."""
    return f"{model.name}_scores"


def storage_prefix(model: ModelConfig) -> str:
    """Where ``model``'s scores go in the storage: ``scores/`` or ``models/<name>/scores/``."""
    return f"models/{model.name}/" if model.prefixed else ""


def build(model: ModelConfig, config: PlatformConfig) -> dg.Definitions:
    """``model``'s ``churn_scores`` asset, its job (one run per week) and its schedule."""
    job = dg.define_asset_job(
        model.job(JOB),
        selection=dg.AssetSelection.assets(asset_key(model, ASSET)),
        description="Score one week's customers with the champion (a partition per week); "
        "a range of weeks: python -m churn_platform score --from DATE --to DATE.",
        tags={"churn/pipeline": "scores", "churn/model": model.name},
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=model.named("weekly_scoring"),
        description="Mondays 04:00 UTC (after the retraining schedule): this week's scores "
        "with the champion of the moment.",
        minute_of_hour=0,
        hour_of_day=4,
        day_of_week=1,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(assets=[build_asset(model, config)], jobs=[job], schedules=[schedule])


def build_asset(model: ModelConfig, config: PlatformConfig) -> dg.AssetsDefinition:
    """The weekly-partitioned ``churn_scores`` asset of ``model``."""
    key = asset_key(model, ASSET)

    @dg.asset(
        **asset_args(model, ASSET),
        partitions_def=partitions(config),
        kinds={"spark" if config.engine.engine == "spark" else "pandas", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=name in sc.BLOCKING, description=text)
            for name, text in sc.CHECK_DESCRIPTIONS.items()
        ],
        required_resource_keys={"storage", "scores_table", *keys(model, "mlflow_registry")}
        | keys(model, "data_source"),
    )
    def churn_scores(context: dg.AssetExecutionContext):
        """Every customer of the week (the partition), scored by the champion, ranked.

        The week's rows come from the model's source (the synthetic world's draw of that
        week; a folder's `<week's Sunday>.parquet|csv`; `CHURN_SCORES_QUERY` with
        `:week_start`/`:week_end`), mapped onto the spec and checked by the same data
        contract as validated_churn_data: a week breaking a blocking rule is not scored.
        The model `champion` points at when the run starts scores every validated customer:
        entity id, probability, rank, decile, model version, data version, spec hash, run.
        Checks: one row per customer, unique ids, probabilities in [0, 1], a sample scored
        through the model server's code gives the same numbers (a failure publishes
        nothing), and the score PSI against the previous week (WARN). Written as Parquet
        to the storage and, with `CHURN_SCORES_URL`, upserted into table `<model>_scores`.
        With `CHURN_ENGINE=spark` the mapping, data version and contract run on Spark (a
        week's file is read by Spark), the champion scores there through `spark_udf`, and
        Spark ranks the week and writes its Parquet; the checks run on that file and the
        database rows are streamed from it: the week's rows never gather on the driver.
        """
        week, storage = context.partition_key, context.resources.storage
        # the Spark engine's table is written there first; removed whatever happens
        staging = storage.staging_folder() if config.engine.engine == "spark" else None
        try:
            scored = _scored(context, model, config, staging)
            for outcome in scored.checks:
                warn = dg.AssetCheckSeverity.WARN if outcome.name == sc.PSI else None
                yield check_result(outcome, key, warn or dg.AssetCheckSeverity.ERROR)
            if scored.failed:
                raise dg.Failure(description=step.failure_text(week, scored.failed))
            meta = _publish(context, model, storage, scored)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        # the week's scores change with its data or with the champion
        version = f"{meta['data_version'][:16]}-v{meta['model_version']}"
        yield dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(version))

    return churn_scores


def _scored(
    context: dg.AssetExecutionContext,
    model: ModelConfig,
    config: PlatformConfig,
    staging: Path | None,
) -> step.WeekScores:
    """The partition's week read, validated and scored by the champion on the configured
    engine (the Spark engine writes its table under ``staging``)."""
    week, storage = context.partition_key, context.resources.storage
    try:
        source = model_resource(context, model, "data_source")
        raw = week_source(source, week, model.source.scores_query)
        mapping = source.column_mapping(model.spec)
        if config.engine.engine == "spark":
            checked = _validated_on_spark(raw, mapping, model, week, config.engine)
        else:
            mapped, seen = load_snapshot(raw, mapping, required=(), spec=model.spec)
            checked = step.validate_week(mapped, model.spec, week, str(seen.get("location")))
        scorer = ChampionScorer.load(model_resource(context, model, "mlflow_registry"))
        run = (context.run.run_id, pd.Timestamp.now(tz="UTC").isoformat())
        previous = _previous(storage, model, week)
        if staging is not None and checked.engine == "spark":
            return step.score_week_on_spark(checked, scorer, run, previous, config.scores, staging)
        return step.score_week(checked, scorer, run, previous, config.scores)
    except (DataSourceError, step.ScoresError) as exc:
        raise dg.Failure(description=str(exc)) from exc


def _validated_on_spark(
    raw: Any, mapping: ColumnMapping, model: ModelConfig, week: str, engine: EngineConfig
) -> step.ValidatedWeek:
    """The week mapped, versioned and checked on Spark: a week's file read by Spark (when it
    has no CSV read options, which only the pandas reader takes), other sources' rows moved
    from their reader into Spark."""
    from churn_platform.core.engines.validation import validate

    rows, description = spark_input(raw)
    location = str(description.get("location"))
    try:
        checked = validate(rows, model.spec, engine, mapping=mapping)
    except DataSourceError as exc:
        raise DataSourceError(f"{location}: {exc}") from exc
    return step.validated_on_engine(checked, model.spec, week, location)


def _previous(storage: StorageResource, model: ModelConfig, week: str) -> pd.DataFrame | None:
    """The previous week's published probabilities (the one column the PSI reads), or None."""
    path = storage.path(sc.scores_key(storage_prefix(model), sc.previous_week(week)))
    if not path.exists():
        return None
    return pd.read_parquet(io.BytesIO(path.read_bytes()), columns=[sc.PROBABILITY])


def _publish(
    context: dg.AssetExecutionContext,
    model: ModelConfig,
    storage: StorageResource,
    scored: step.WeekScores,
) -> dict[str, Any]:
    """Write the week's Parquet and, when configured, its database rows; the metadata."""
    week, staged = context.partition_key, scored.staged
    key, database = sc.scores_key(storage_prefix(model), week), context.resources.scores_table
    if staged is None:
        path = storage.write_frame(key, scored.table, False)
    else:  # the Spark engine's file, as Spark wrote it
        path = storage.write_file(key, staged)
    try:
        if not database.enabled():
            upserted = 0
        elif staged is None:
            upserted = database.upsert(table_name(model), scored.table)
        else:
            upserted = database.upsert_parquet(table_name(model), staged)
    except ValueError as exc:  # names CHURN_SCORES_URL; the Parquet is written already
        raise dg.Failure(description=f"week {week}: {exc}") from exc
    where = f"{table_name(model)} at {database.safe_url()}" if database.enabled() else "none"
    meta = dict(scored.metadata)
    return {
        **meta,
        "dagster/row_count": meta["rows"],
        "deciles": dg.MetadataValue.md(md_table(meta["deciles"])),
        "parquet": dg.MetadataValue.path(path),
        "database_table": where,
        "rows_upserted": upserted,
        "top": dg.MetadataValue.md(md_table(scored.top)),
    }
