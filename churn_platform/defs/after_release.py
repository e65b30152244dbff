"""After release: ``model_performance`` (served predictions joined to outcomes, per prediction
week and version) and ``performance_sensor`` (the fourth retraining trigger).
``build(model, config)`` makes both; the logic is in ``core.performance``,
``core.cbpe`` and ``core.performance_step``."""

import io
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd
import pydantic

from churn_platform.config import ModelConfig, PlatformConfig
from churn_platform.core import performance as perf
from churn_platform.core import performance_step as step
from churn_platform.core import records as r
from churn_platform.core import scores
from churn_platform.core.cbpe import IsotonicCalibrator
from churn_platform.core.spec import Spec
from churn_platform.defs import weekly_scores
from churn_platform.defs.common import asset_args, asset_key, check_specs, model_resource
from churn_platform.defs.common import model_resource_keys as keys
from churn_platform.defs.notifications import guarded
from churn_platform.defs.week_runs import week_to_run
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import PERFORMANCE, Message, Notifier, deliver
from churn_platform.resources.outcome_source import OutcomeSourceResource
from churn_platform.resources.prediction_log import week_predictions
from churn_platform.resources.storage import StorageResource

ASSET = "model_performance"


class PerformanceRunConfig(dg.Config):
    """How one week is judged now."""

    as_of: str = pydantic.Field(
        default="",
        description="judge the week as of this day (YYYY-MM-DD, UTC midnight) instead of now: "
        "a replay, or a test of a week the calendar has not matured yet",
    )


def export_key(model: ModelConfig) -> str:
    """Where ``model``'s performance figures go in the storage (the exporter's input)."""
    base = step.PERFORMANCE_EXPORT_KEY
    return f"models/{model.name}/{base}" if model.prefixed else base


def build(model: ModelConfig, config: PlatformConfig) -> dg.Definitions:
    """``model``'s ``model_performance`` asset and ``performance_sensor``."""
    return dg.Definitions(
        assets=[build_asset(model, config)],
        sensors=[build_sensor(model, config)],
    )


def build_asset(model: ModelConfig, config: PlatformConfig) -> dg.AssetsDefinition:
    """The weekly-partitioned ``model_performance`` asset of ``model``."""
    monitor = config.performance

    @dg.asset(
        **asset_args(model, ASSET),
        deps=[asset_key(model, "production_deployment")],
        # end_offset=1: the running week is a partition too (pending: its estimate only)
        partitions_def=dg.WeeklyPartitionsDefinition(start_date=monitor.start_date, end_offset=1),
        kinds={"mlflow"},
        check_specs=check_specs(model, ASSET, step.CHECK_DESCRIPTIONS, blocking=False),
        required_resource_keys={
            "storage",
            "outcome_source",
            *keys(model, "mlflow_registry", "inference_log", "data_source"),
        },
    )
    def model_performance(context: dg.AssetExecutionContext, config: PerformanceRunConfig):
        """Every served version's real performance in one prediction week (the partition).

        The week's latest prediction per customer and version (from the inference log) is
        joined to the customer's first outcome within the spec's `label_delay_days`. A mature
        week (older than the delay) gets per version: rows matched and match rate, churners,
        AUC with its bootstrap interval, Brier, calibration error with a reliability table,
        precision and recall in the top 10%, AUC per slice of the version's spec, and three
        checks (realized AUC consistent with the holdout AUC, calibration, match rate). A
        week that is not mature is pending: it is not scored, only estimated. Every week
        gets the CBPE estimate of AUC from the served probabilities and the calibrator
        logged with the version; when outcomes arrive the estimate's error is shown beside
        the realized AUC. CBPE cannot see concept drift: that is what the realized check is
        for. The figures are written to the storage for Prometheus and performance_sensor.
        """
        yield from _judge(context, config, model, monitor)

    return model_performance


def _now(as_of: str) -> float:
    if not as_of:
        return time.time()
    try:
        return pd.Timestamp(as_of, tz="UTC").timestamp()
    except ValueError as exc:
        raise dg.Failure(description=f"as_of must be a date YYYY-MM-DD, got {as_of!r}") from exc


def _spec_reader(registry: MlflowRegistry) -> Callable[[str], Spec]:
    """Each version's own spec, read once from the registry."""
    specs: dict[str, Spec] = {}

    def spec_of(version: str) -> Spec:
        if version not in specs:
            specs[version] = registry.spec_of_version(version)
        return specs[version]

    return spec_of


def _served(
    registry: MlflowRegistry, versions: list[str], spec_of: Callable[[str], Spec]
) -> dict[str, tuple[Spec | None, float | None, Any]]:
    """Each version's spec, holdout AUC and CBPE calibrator (``7:batch``: version 7's)."""
    served: dict[str, tuple[Spec | None, float | None, IsotonicCalibrator | None]] = {}
    for label in versions:
        version = scores.registered_version(label)
        holdout = registry.version_metrics(version).get("holdout_auc")
        served[label] = (spec_of(version), holdout, registry.calibrator_of_version(version))
    return served


def _batch_scores(
    storage: StorageResource, model: ModelConfig, week: str, start: int
) -> pd.DataFrame:
    """The week's ``churn_scores`` as predictions (empty when the week was not scored)."""
    path = storage.path(scores.scores_key(weekly_scores.storage_prefix(model), week))
    if not path.exists():
        return pd.DataFrame(columns=list(perf.PREDICTION_COLUMNS))
    return scores.batch_predictions(pd.read_parquet(io.BytesIO(path.read_bytes())), start)


def _judge(
    context: dg.AssetExecutionContext,
    run_config: PerformanceRunConfig,
    model: ModelConfig,
    monitor: step.MonitorSettings,
):
    spec = model.spec
    if spec.outcomes is None:
        raise dg.Failure(
            description=f"spec {spec.name!r} declares no 'outcomes': add the section (source, "
            "columns, label_delay_days) to measure realized performance"
        )
    week = context.partition_key
    now = _now(run_config.as_of)
    settings = monitor.performance(spec.outcomes.label_delay_days)
    registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    start, end = perf.week_bounds(week)
    spec_of = _spec_reader(registry)
    log = model_resource(context, model, "inference_log")
    predictions = week_predictions(log, spec_of, start, end)
    storage: StorageResource = context.resources.storage
    batch = _batch_scores(storage, model, week, start)
    if len(batch):
        predictions = pd.concat([predictions, batch], ignore_index=True)
    versions = sorted(set(predictions["model_version"].astype(str)))
    served = _served(registry, versions, spec_of)
    outcomes = pd.DataFrame(columns=list(perf.OUTCOME_COLUMNS))
    if perf.is_mature(week, now, settings.label_delay_days) and len(predictions):
        source: OutcomeSourceResource = context.resources.outcome_source
        outcomes = source.load(spec, week, _synthetic_knobs(context, model))
    report = step.evaluate_week(predictions, outcomes, week, now, settings, served)
    key = export_key(model)
    existing = storage.path(key).read_text() if storage.path(key).exists() else None
    storage.write_text(key, step.export_week(existing, report, now))
    context.log.info(f"week {week}: {report.week.status}, versions {versions or 'none'}")
    for name, (passed, text) in step.check_results(report).items():
        yield dg.AssetCheckResult(
            check_name=name,
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=text,
            metadata={"status": report.week.status, "summary": text},
        )
    meta: dict[str, Any] = step.week_metadata(report)
    for name in ("versions", "reliability", "slices"):
        meta[name] = dg.MetadataValue.md(meta[name])
    yield dg.MaterializeResult(metadata=meta)


def _synthetic_knobs(context: dg.AssetExecutionContext, model: ModelConfig) -> dict[str, Any]:
    """The synthetic source's knobs (size, seed, ...): the synthetic world's outcomes are
    those of the customers it drew. Empty for another source."""
    source = model_resource(context, model, "data_source")
    if not isinstance(source, SyntheticSourceResource):
        return {}
    # every knob of the draw (as_of aside: the week is the partition's)
    return {name: getattr(source, name) for name in type(source).model_fields if name != "as_of"}


def build_sensor(model: ModelConfig, config: PlatformConfig) -> dg.SensorDefinition:
    """``model``'s performance sensor (the fourth retraining trigger)."""
    monitor = config.performance

    @dg.sensor(
        name=model.named("performance_sensor"),
        job_name=model.job("retraining"),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Retrain when the champion's realized AUC on a matured week (or, with "
        "CHURN_PERFORMANCE_TRIGGER=estimate, its CBPE estimate) is significantly below its "
        f"holdout AUC (by more than CHURN_PERFORMANCE_AUC_TOLERANCE, {monitor.auc_tolerance}). "
        "Reads what model_performance wrote; one run and one notification per episode.",
        required_resource_keys={"notifier", "storage", *keys(model, "mlflow_registry")},
    )
    def performance_sensor(context: dg.SensorEvaluationContext):
        """One retraining run (tagged churn/trigger=performance with the figures) and one
        notification per episode of the champion performing below its holdout AUC."""
        name = model.named("performance_sensor")
        return guarded(context, name, lambda: _performance_tick(context, model, monitor))

    return performance_sensor


def _performance_tick(
    context: dg.SensorEvaluationContext, model: ModelConfig, monitor: step.MonitorSettings
):
    registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    champion = registry.alias_version(r.CHAMPION)
    if champion is None:
        return dg.SkipReason("no champion is registered yet: no performance to judge")
    storage: StorageResource = context.resources.storage
    path = storage.path(export_key(model))
    export = path.read_text() if path.exists() else None
    decision = step.judge_trigger(export, champion, monitor, context.cursor)
    if not decision.request_run:
        return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason), cursor=decision.cursor)
    notifier: Notifier = context.resources.notifier
    link = notifier.runs_with_tag_url("dagster/run_key", decision.run_key or "")
    message = Message(PERFORMANCE, champion, decision.reason, link)
    told = deliver(notifier, storage, message, f"performance-{decision.run_key}")
    context.log.info(f"performance notification: {told}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=decision.run_key,
                tags=decision.tags,
                partition_key=week_to_run(context.instance, model),  # the week a run takes
            )
        ],
        cursor=decision.cursor,
    )
