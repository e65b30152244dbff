"""The data layer of one model: snapshot -> validated data (the contract as blocking checks)
-> fixed holdout. ``build(model)`` makes the three assets for a model's configuration."""

import dataclasses
from typing import Any

import dagster as dg
import pandas as pd
import pydantic

from churn_platform.config import ModelConfig
from churn_platform.core import contract, data_step, holdout
from churn_platform.core.engines import spark_session, spark_week
from churn_platform.core.mapping import DataSourceError, MappedFrame
from churn_platform.core.records import SparkDataset
from churn_platform.core.spec import Spec
from churn_platform.defs import week_runs
from churn_platform.defs.common import (
    asset_args,
    asset_key,
    check_specs,
    config_from,
    md_table,
    model_resource,
    model_resource_keys,
)
from churn_platform.resources.week_source import partition_source, snapshot_of_week, spark_input

SNAPSHOT_CHECKS = {
    "row_count_positive": "The snapshot has at least one row.",
    "schema_columns_present": "Every column of the spec is present after the column mapping.",
}
SNAPSHOT_ASSET = "churn_snapshot"
VALIDATED_ASSET = "validated_churn_data"
HOLDOUT_ASSET = "holdout_set"


HOLDOUT_CHECKS = {
    "holdout_size": "The holdout has enough rows to measure AUC.",
    "holdout_class_balance": "Both classes are present in a usable proportion.",
}


def spec_metadata(model: ModelConfig) -> dict[str, Any]:
    """Which spec shaped an asset: its short hash, file and name (asset metadata)."""
    return {
        "spec_hash": model.spec.short_hash,
        "spec_path": model.spec_path,
        "spec_name": model.spec.name,
    }


def column_schema(frame: pd.DataFrame, spec: Spec) -> dg.TableSchema:
    """The frame's columns and dtypes, with the contract's rule for each (shown in the UI)."""
    rules: dict[str, list[str]] = {}
    for rule in contract.contract_rules(spec=spec):
        if rule.column:
            rules.setdefault(rule.column, []).append(rule.description)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(c), type=str(t), description="; ".join(rules.get(str(c), [])))
            for c, t in frame.dtypes.items()
        ]
    )


def frame_metadata(frame: pd.DataFrame, version: str, spec: Spec) -> dict[str, Any]:
    """What the UI shows for a data frame asset: data version, row count, typed columns."""
    return {
        "data_version": version,
        "rows": len(frame),
        "dagster/row_count": len(frame),
        "dagster/column_schema": column_schema(frame, spec),
    }


def _rule_check(result: contract.RuleResult) -> dg.AssetCheckResult:
    """A contract rule's result as an asset check, with its evidence."""
    meta = data_step.rule_metadata(result)
    meta["failure_cases"] = dg.MetadataValue.md(meta["failure_cases"])
    return dg.AssetCheckResult(
        check_name=result.name,
        passed=result.passed,
        severity=_severity(result),
        metadata=meta,
        description=result.description,
    )


def _severity(result: contract.RuleResult) -> dg.AssetCheckSeverity:
    return (
        dg.AssetCheckSeverity.ERROR
        if result.severity == contract.ERROR
        else dg.AssetCheckSeverity.WARN
    )


def build_churn_snapshot(model: ModelConfig) -> dg.AssetsDefinition:
    """``model``'s ``churn_snapshot`` asset."""

    @dg.asset(
        **asset_args(model, SNAPSHOT_ASSET),
        partitions_def=week_runs.data_partitions(model),
        kinds={_engine(model), "parquet"},
        check_specs=check_specs(model, SNAPSHOT_ASSET, SNAPSHOT_CHECKS),
        required_resource_keys={"storage", *model_resource_keys(model, "data_source")},
    )
    def churn_snapshot(context: dg.AssetExecutionContext):
        """One week's snapshot of customer rows from the model's source, mapped onto its spec.

        Partitioned by week (Sunday to Saturday, UTC; `CHURN_WEEKS_START` is the first). The
        source is the synthetic generator by default (a partition draws that week's
        customers; `CHURN_SYNTHETIC_AS_OF` pins one week for all), or a CSV/Parquet file, a
        folder of weekly files named by the week's Sunday (`2026-11-15.parquet`; a folder of
        other names gives its newest file), or a SQL table or query (with
        `CHURN_SCORES_QUERY` set, that query with the week's bounds `:week_start` and
        `:week_end`), as the model's configuration says (`CHURN_SOURCE`, or `source:` in the
        platform file). The spec (metadata `spec_hash`, `spec_path`) renames source columns
        and translates values (an explicit mapping file is merged over it). The rows are kept
        as Parquet under `snapshots/` of the storage resource (`$CHURN_HOME` locally), and the
        data version is a content hash of every row, so every model traces to the exact data
        it saw. Missing columns (naming the spec key that reads them) and an empty table stop
        here. With `CHURN_ENGINE=spark` the week is read (a file by Spark), mapped and hashed
        on Spark and kept as a Parquet dataset under `spark/snapshots/` (with the mapping's
        per-row flags); the value is a record naming it.
        """
        if model.engine.engine == "spark":
            yield from _snapshot_on_spark(context, model)
        else:
            yield from _snapshot(context, model)

    return churn_snapshot


def _snapshot(context: dg.AssetExecutionContext, model: ModelConfig):
    spec, storage = model.spec, context.resources.storage
    data_source = model_resource(context, model, "data_source")
    week = context.partition_key
    try:
        mapped, description = snapshot_of_week(data_source, week, spec, model.source.scores_query)
    except DataSourceError as exc:
        raise dg.Failure(description=f"{exc}. {data_step.UNTOUCHED}") from exc
    frame, location = mapped.frame, description.get("location")
    timings = data_step.Timings(description.get("timings_s") or {})
    with timings.measure("data_version"):
        version = contract.data_version(mapped)
    missing = data_step.missing_columns(frame, spec)
    for name, (passed, evidence) in data_step.snapshot_checks(
        frame, missing, spec, location
    ).items():
        yield dg.AssetCheckResult(check_name=name, passed=passed, metadata=evidence)
    problem = data_step.snapshot_problem(frame, missing, spec, location)
    if problem:
        raise dg.Failure(
            description=problem,
            metadata={"missing_columns": ", ".join(missing), "rows": len(frame)},
        )
    key = data_step.snapshot_key(version, pd.Timestamp.now(tz="UTC"), context.run.run_id)
    with timings.measure("write_parquet"):
        path = storage.write_frame(key, frame, index=False)
    meta = data_step.snapshot_metadata(mapped, description)
    yield dg.Output(
        mapped,
        data_version=dg.DataVersion(version),
        metadata={
            **frame_metadata(frame, version, spec),
            **spec_metadata(model),
            **meta,
            "week": week,
            "parquet": dg.MetadataValue.path(path),
            "nulls_from_conversion": dg.MetadataValue.json(meta["nulls_from_conversion"]),
            "unmapped_values": dg.MetadataValue.json(meta["unmapped_values"]),
            "preview": dg.MetadataValue.md(md_table(meta["preview"])),
            "timings_s": dg.MetadataValue.json(timings.rounded()),
        },
    )


def _engine(model: ModelConfig) -> str:
    """The engine kind the UI shows on the weekly data assets."""
    return "spark" if model.engine.engine == "spark" else "pandas"


def _snapshot_on_spark(context: dg.AssetExecutionContext, model: ModelConfig):
    """``_snapshot`` on Spark: the week's dataset written to the storage, a record its value."""
    spec, storage, week = model.spec, context.resources.storage, context.partition_key
    data_source = model_resource(context, model, "data_source")
    timings = data_step.Timings()
    now = pd.Timestamp.now(tz="UTC")
    location = str(storage.path(spark_week.dataset_key("snapshot", week, now, context.run.run_id)))
    where = "the source"
    try:
        with timings.measure("read_map_write"):
            rows, description = spark_input(
                partition_source(data_source, week, model.source.scores_query)
            )
            where = str(description.get("location"))
            taken = spark_week.write_snapshot(
                spark_session.spark_session(model.engine),
                rows,
                data_source.column_mapping(spec),
                spec,
                week,
                location,
            )
    except DataSourceError as exc:
        raise dg.Failure(description=f"{where}: {exc}. {data_step.UNTOUCHED}") from exc
    for name, (passed, evidence) in data_step.snapshot_checks(
        taken, taken.missing, spec, where
    ).items():
        yield dg.AssetCheckResult(check_name=name, passed=passed, metadata=evidence)
    problem = data_step.snapshot_problem(taken, taken.missing, spec, where)
    if problem or taken.dataset is None or taken.counts is None:
        raise dg.Failure(
            description=problem or f"{where}: nothing was written",
            metadata={"missing_columns": ", ".join(taken.missing), "rows": taken.rows},
        )
    dataset, counts = taken.dataset, taken.counts
    conversion = {c: r.as_dict() for c, r in counts.conversion.items() if r.nulls_added}
    yield dg.Output(
        dataset,
        data_version=dg.DataVersion(dataset.data_version),
        metadata={
            **frame_metadata(taken.preview, dataset.data_version, spec),
            "rows": dataset.rows,
            "dagster/row_count": dataset.rows,
            **spec_metadata(model),
            "engine": "spark",
            "source": where,
            "source_kind": str(description.get("kind")),
            "columns": ", ".join(taken.columns),
            "week": week,
            "parquet": dg.MetadataValue.path(location),
            "nulls_from_conversion": dg.MetadataValue.json(conversion),
            "unmapped_values": dg.MetadataValue.json(counts.unmapped_values),
            "preview": dg.MetadataValue.md(md_table(taken.preview)),
            "timings_s": dg.MetadataValue.json(timings.rounded()),
            **data_step.synthetic_metadata(description),
        },
    )


class ContractSettings(dg.Config):
    """Run-time overrides of the contract the spec declares (see ``core.contract.ContractConfig``)."""

    overrides: dict[str, Any] = pydantic.Field(
        default={},
        description="Overrides of core.contract.ContractConfig fields over the spec's contract, "
        "e.g. {'severities': {'<rule name>': 'WARN'}, 'null_rate_limits': {'<column>': 0.1}, "
        "'min_rows': 1000}; the shipped spec also takes 'monthly_spend_mean_range': [20, 500] "
        "and the like. Unknown keys, rules and columns are refused by name.",
    )


def build_validated_churn_data(model: ModelConfig) -> dg.AssetsDefinition:
    """``model``'s ``validated_churn_data`` asset with one asset check per contract rule of its
    spec (the spec is part of the model's configuration: a changed spec is a reload)."""
    key = asset_key(model, VALIDATED_ASSET)

    @dg.asset(
        **asset_args(model, VALIDATED_ASSET, SNAPSHOT_ASSET),
        partitions_def=week_runs.data_partitions(model),
        kinds={"pandera", _engine(model)},
        check_specs=[
            dg.AssetCheckSpec(
                rule.name,
                asset=key,
                blocking=rule.severity == contract.ERROR,
                description=rule.description,
            )
            for rule in contract.contract_rules(spec=model.spec)
        ],
        required_resource_keys={"storage"},
    )
    def validated_churn_data(
        context: dg.AssetExecutionContext, config: ContractSettings, churn_snapshot: Any
    ):
        """The snapshot after the data contract passed, with the types the spec declares.

        Every contract rule (pandera schema plus a vectorised evaluator, both generated from
        the table spec, `CHURN_SPEC`) is its own asset check with its evidence: observed value,
        bound, failing row count and a sample of failing rows. ERROR rules block: the asset
        is not materialised, the run stops, nothing downstream trains on bad data, and the
        last good validated data stays as it was. WARN rules alert only. A quality report is
        written per snapshot; metadata `spec_hash` names the spec. With `CHURN_ENGINE=spark`
        the contract runs on Spark over the snapshot's dataset (the same rule names and
        failing counts) and the typed rows are a Parquet dataset under `spark/validated/`.
        """
        if isinstance(churn_snapshot, SparkDataset):
            return _validate_on_spark(context, config, model, churn_snapshot)
        return _validate(context, config, model, churn_snapshot)

    return validated_churn_data


def _contract_config(config: ContractSettings, spec: Spec) -> contract.ContractConfig:
    try:
        return contract.ContractConfig.from_dict(config.overrides, spec=spec)
    except ValueError as exc:
        raise dg.Failure(description=f"contract overrides (run config): {exc}") from exc


def _validate(
    context: dg.AssetExecutionContext,
    config: ContractSettings,
    model: ModelConfig,
    churn_snapshot: MappedFrame,
):
    spec, storage = model.spec, context.resources.storage
    cfg = _contract_config(config, spec)
    timings = data_step.Timings()
    with timings.measure("contract"):
        results = contract.evaluate_contract(churn_snapshot, cfg, spec=spec)
    # the snapshot already hashed these rows; hash again only when its record is missing
    version = week_runs.week_metadata(
        context, model, SNAPSHOT_ASSET, context.partition_key, "data_version"
    ) or contract.data_version(churn_snapshot)
    with timings.measure("quality_report"):
        report_text = data_step.quality_text(churn_snapshot, results, spec, version)
        report_path = storage.write_text(f"reports/quality_{version[:12]}.md", report_text)
    yield from (_rule_check(result) for result in results)
    blocking = contract.blocking_failures(results)
    if blocking:
        raise dg.Failure(
            description=data_step.blocking_failure(blocking),
            metadata={
                "failed_rules": ", ".join(r.name for r in blocking),
                "quality_report": dg.MetadataValue.path(report_path),
            },
        )
    with timings.measure("validate"):
        typed = contract.validated_frame(churn_snapshot, cfg, results, spec=spec)
    meta = data_step.validated_metadata(typed, results, spec, report_text)
    meta["quality_summary"] = dg.MetadataValue.md(meta["quality_summary"])
    yield dg.Output(
        typed,
        data_version=dg.DataVersion(version),
        metadata={
            **frame_metadata(typed, version, spec),
            **spec_metadata(model),
            **meta,
            "week": context.partition_key,
            "quality_report": dg.MetadataValue.path(report_path),
            "timings_s": dg.MetadataValue.json(timings.rounded()),
        },
    )


def _validate_on_spark(
    context: dg.AssetExecutionContext,
    config: ContractSettings,
    model: ModelConfig,
    snapshot: SparkDataset,
):
    """``_validate`` on Spark over the snapshot's dataset; the typed rows a new dataset."""
    spec, storage, week = model.spec, context.resources.storage, context.partition_key
    cfg = _contract_config(config, spec)
    timings = data_step.Timings()
    spark = spark_session.spark_session(model.engine)
    with timings.measure("contract"):
        checked = spark_week.check_snapshot(spark, snapshot, cfg, spec)
    results, version = checked.checked.results, snapshot.data_version
    with timings.measure("quality_report"):
        report_text = spark_week.quality_text(checked, spec, version)
        report_path = storage.write_text(f"reports/quality_{version[:12]}.md", report_text)
    yield from (_rule_check(result) for result in results)
    blocking = contract.blocking_failures(results)
    if blocking:
        raise dg.Failure(
            description=data_step.blocking_failure(blocking),
            metadata={
                "failed_rules": ", ".join(r.name for r in blocking),
                "quality_report": dg.MetadataValue.path(report_path),
            },
        )
    key = spark_week.dataset_key("validated", week, pd.Timestamp.now(tz="UTC"), context.run.run_id)
    location = str(storage.path(key))
    with timings.measure("write_parquet"):
        dataset, rate = spark_week.write_validated(checked, spec, week, version, location)
    meta = data_step.validated_metadata(rate, results, spec, report_text)
    meta["quality_summary"] = dg.MetadataValue.md(meta["quality_summary"])
    yield dg.Output(
        dataset,
        data_version=dg.DataVersion(version),
        metadata={
            **frame_metadata(checked.sample, version, spec),
            "rows": dataset.rows,
            "dagster/row_count": dataset.rows,
            **spec_metadata(model),
            **meta,
            "engine": "spark",
            "week": week,
            "parquet": dg.MetadataValue.path(location),
            "quality_report": dg.MetadataValue.path(report_path),
            "timings_s": dg.MetadataValue.json(timings.rounded()),
        },
    )


class HoldoutSettings(config_from(holdout.HoldoutConfig)):  # type: ignore[misc]
    """The holdout selection: change `salt` or `fraction` only to re-draw it on purpose.

    Unset `fraction` and `salt` come from the spec's `holdout` section.
    """

    fraction: float | None = pydantic.Field(
        default=None,
        description="Share of customers held out, in (0, 1); unset: the spec's holdout.fraction. "
        "Changing it re-draws the holdout: do it only on purpose.",
    )
    salt: str | None = pydantic.Field(
        default=None,
        description="Salt of the entity id hash; unset: the spec's holdout.salt. Changing it "
        "re-draws the holdout: do it only on purpose.",
    )

    def to_core(self, core: type[Any]) -> Any:
        """``core`` from the set fields (unset ones: the core's defaults)."""
        names = {f.name for f in dataclasses.fields(core)}
        return core(**{k: v for k, v in self.model_dump().items() if k in names and v is not None})

    def holdout_config(self, spec: Spec) -> holdout.HoldoutConfig:
        """The core config, unset fraction and salt taken from ``spec.holdout``."""
        fraction = spec.holdout.fraction if self.fraction is None else self.fraction
        salt = spec.holdout.salt if self.salt is None else self.salt
        return holdout.HoldoutConfig(
            fraction=fraction,
            salt=salt,
            min_rows=self.min_rows,
            min_positive_rate=self.min_positive_rate,
        )


def build_holdout_set(model: ModelConfig) -> dg.AssetsDefinition:
    """``model``'s ``holdout_set`` asset."""

    @dg.asset(
        **asset_args(model, HOLDOUT_ASSET),
        deps=[asset_key(model, VALIDATED_ASSET)],
        kinds={"pandas"},
        check_specs=check_specs(model, HOLDOUT_ASSET, HOLDOUT_CHECKS),
        required_resource_keys={"io_manager"},
    )
    def holdout_set(context: dg.AssetExecutionContext, config: HoldoutSettings):
        """Fixed evaluation rows: the customers whose salted entity-id hash falls in the holdout.

        Drawn from the run's week of validated data (the run's partition; the newest
        validated week when the run has none; metadata `week`).

        The entity id, the target, and the default `fraction` and `salt` come from the model's
        spec. A customer never moves between training and holdout across snapshots; the
        selection changes only when `salt` or `fraction` is changed. Its hash is in every
        evaluation report, and both champion and challenger are always scored on these rows.
        """
        spec = model.spec
        try:
            cfg = config.holdout_config(spec)
        except ValueError as exc:
            raise dg.Failure(description=f"holdout config: {exc}") from exc
        week = week_runs.run_week(context, model)
        # only the holdout rows are copied out (selected on Spark for a Spark dataset)
        rows = week_runs.holdout_of_week(context, model, week, cfg.fraction, cfg.salt)
        rate = float(rows[spec.target_column].mean()) if len(rows) else 0.0
        size_ok = len(rows) >= config.min_rows
        balance_ok = config.min_positive_rate <= rate <= 1 - config.min_positive_rate
        yield dg.AssetCheckResult(
            check_name="holdout_size",
            passed=size_ok,
            metadata={"rows": len(rows), "bound": f">= {config.min_rows}"},
        )
        yield dg.AssetCheckResult(
            check_name="holdout_class_balance",
            passed=balance_ok,
            metadata={
                "positive_rate": round(rate, 4),
                "bound": f"[{config.min_positive_rate}, {1 - config.min_positive_rate}]",
            },
        )
        if not (size_ok and balance_ok):
            raise dg.Failure(
                description=f"holdout has {len(rows)} rows with churn rate {rate:.3f}; it needs at least "
                f"{config.min_rows} rows and both classes (raise `fraction` or bring more data)"
            )
        digest = contract.data_version(rows)
        yield dg.Output(
            rows,
            metadata={
                "holdout_hash": digest,
                "rows": len(rows),
                "dagster/row_count": len(rows),
                "positive_rate": round(rate, 4),
                "fraction": cfg.fraction,
                "salt": cfg.salt,
                "spec_hash": spec.short_hash,
                "week": week,
            },
        )

    return holdout_set


def build(model: ModelConfig) -> list[dg.AssetsDefinition]:
    """The data assets of ``model``: snapshot, validated data, holdout."""
    return [
        build_churn_snapshot(model),
        build_validated_churn_data(model),
        build_holdout_set(model),
    ]
