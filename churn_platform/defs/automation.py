"""One model's jobs, weekly retraining schedule and sensors (PSI drift, code version, new
file). ``build(model, config)`` makes them; their names carry the model's name in a platform
file (``accounts_retraining``, ``accounts_psi_drift_sensor``), as its assets carry its prefix."""

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.config import ModelConfig, PlatformConfig
from churn_platform.core import drift
from churn_platform.core import records as r
from churn_platform.core.drift_monitor import (
    PSI_EXPORT_KEY,
    SOURCE_WINDOW,
    DriftSettings,
    EpisodeState,
    drift_reason,
    judge_tick,
    no_profile_reason,
    observation_metadata,
    psi_export,
    run_tags,
)
from churn_platform.core.synthetic import week_of
from churn_platform.core.weeks import sunday_of
from churn_platform.defs.common import asset_key, model_resource, model_resource_keys
from churn_platform.defs.model import ASSET as MODEL_ASSET
from churn_platform.defs.model import training_code_version
from churn_platform.defs.notifications import guarded
from churn_platform.defs.week_runs import data_partitions, week_to_run
from churn_platform.resources.data_source import (
    DataSourceError,
    DataSourceResource,
    FileSourceResource,
)
from churn_platform.resources.inference_log_reader import InferenceLogResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import DRIFT, Message, Notifier, deliver
from churn_platform.resources.storage import StorageResource

# the tag Dagster puts on a materialisation of an asset with a code version (its value is part
# of Dagster's stored event format; test_code_and_file_triggers reads it back from a real one)
CODE_VERSION_TAG = "dagster/code_version"
RETRAINING_JOB = "churn_retraining"  # the default model's job names: <model>_<job>
RETRAINING_ASSETS = [
    "churn_snapshot",
    "validated_churn_data",
    "holdout_set",
    "challenger_model",
    "evaluation_report",
    "staging_deployment",
]
PRODUCTION = "production_deployment"


def retraining_selection(model: ModelConfig, auto_release: bool) -> dg.AssetSelection:
    """Snapshot through staging; production too when ``auto_release``."""
    assets = [*RETRAINING_ASSETS, *([PRODUCTION] if auto_release else [])]
    return dg.AssetSelection.assets(*(asset_key(model, a) for a in assets))


def build_jobs(model: ModelConfig, auto_release: bool) -> list[Any]:
    """``model``'s jobs: retraining, release (the approval), rollback, weekly data, end to end."""
    production = dg.AssetSelection.assets(asset_key(model, PRODUCTION))
    deploying = {"churn/deployment": "production"}  # one production release at a time
    return [
        dg.define_asset_job(
            model.job("retraining"),
            selection=retraining_selection(model, auto_release),
            description="Snapshot -> validated data -> holdout -> challenger -> evaluation -> "
            "staging. Production waits for a person (materialise production_deployment) unless "
            "CHURN_AUTO_RELEASE=1.",
            tags={"churn/pipeline": "retraining", "churn/model": model.name},
        ),
        dg.define_asset_job(
            model.job("release"),
            selection=production,
            description="The approval step: release the staged challenger through the "
            "production canary.",
            tags={**deploying, "churn/model": model.name},
        ),
        dg.define_asset_job(
            model.job("rollback"),
            selection=production,
            description="Rollback on demand: production_deployment in rollback mode, all "
            "traffic to the `previous` version (or the op config's to_version) and the aliases "
            "swapped. CLI: python -m churn_platform rollback [--model NAME] [--to VERSION].",
            tags={**deploying, "churn/model": model.name},
            config={"ops": {model.op(PRODUCTION): {"config": {"mode": "rollback"}}}},
        ),
        dg.define_asset_job(
            model.job("weekly_data"),
            selection=dg.AssetSelection.assets(
                asset_key(model, "churn_snapshot"), asset_key(model, "validated_churn_data")
            ),
            description="One week's snapshot and its data contract (a partition per week): "
            "backfill a range with python -m churn_platform data --from DATE --to DATE, or "
            "from the UI's partitions view.",
            tags={"churn/model": model.name},
        ),
        dg.define_asset_job(
            model.job("end_to_end"),
            # model_performance and churn_scores are weekly-partitioned: their own runs
            selection=dg.AssetSelection.groups(model.group)
            - dg.AssetSelection.assets(
                asset_key(model, "model_performance"), asset_key(model, "churn_scores")
            ),
            description="The whole graph in one run, approval included (the README's first "
            "command).",
            tags={**deploying, "churn/model": model.name},
        ),
    ]


def build_schedule(model: ModelConfig) -> dg.ScheduleDefinition:
    """``model``'s retraining schedule (Monday 02:00 UTC unless its ``schedule`` says)."""

    @dg.schedule(
        name=model.named("weekly_retraining"),
        job_name=model.job("retraining"),
        cron_schedule=model.schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retrain on '{model.schedule}' (UTC), on the week's partition (the current "
        "week; the synthetic world's next week). RUNNING by default: it fires whenever the "
        "Dagster daemon runs (dagster dev starts one); stop it in the UI to pause.",
    )
    def weekly_retraining(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        """One retraining run of the week ``week_to_run`` names."""
        return dg.RunRequest(partition_key=week_to_run(context.instance, model))

    return weekly_retraining


PROFILE_ARTIFACT = "reference_profile.json"


def _observation(
    model: ModelConfig, window: str, result: drift.PsiResult, champion: str, threshold: float
) -> dg.AssetObservation:
    """One window's PSI as an observation of ``churn_snapshot`` (numeric metadata is plotted)."""
    return dg.AssetObservation(
        asset_key=asset_key(model, "churn_snapshot"),
        metadata=observation_metadata(window, result, champion, threshold),
    )


def psi_export_key(model: ModelConfig) -> str:
    """Where ``model``'s drift sensor writes its PSI (the router of the default model reads
    ``monitoring/feature_psi.json``; a platform-file model writes under ``models/<name>/``)."""
    return f"models/{model.name}/{PSI_EXPORT_KEY}" if model.prefixed else PSI_EXPORT_KEY


def _export_psi(
    context: dg.SensorEvaluationContext,
    key: str,
    storage: StorageResource,
    champion: str,
    results: dict[str, drift.PsiResult],
    threshold: float,
) -> None:
    """Write the tick's PSI per feature for the router's /metrics; a storage that refuses the
    write costs the gauges their freshness (said in the log), never the retraining decision."""
    try:
        storage.write_text(key, psi_export(champion, results, threshold, time.time()))
    except OSError as exc:
        context.log.warning(f"could not write {key}: {exc}")


def _champion_profile(registry: MlflowRegistry) -> tuple[str, dict[str, Any]] | dg.SkipReason:
    """The champion's version and its reference profile, or why the tick is skipped."""
    champion = registry.alias_version(r.CHAMPION)
    if champion is None:
        return dg.SkipReason("no champion is registered yet: nothing to compare current data with")
    run_id = registry.version_info(champion).run_id
    profile = registry.find_json_artifact(run_id, PROFILE_ARTIFACT)
    if profile is None:
        return dg.SkipReason(no_profile_reason(champion, run_id, PROFILE_ARTIFACT))
    return champion, profile


def _windows(
    data_source: DataSourceResource,
    inference_log: pd.DataFrame,
    cached: drift.PsiResult | None,
    champion_spec: Any,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The windows to judge now (the source's newest snapshot unless its PSI is ``cached``,
    then the requests the servers scored) and the ones that could not be read. The source is
    mapped through the champion's own spec: the served model's features are what drift means,
    even after a spec change dropped one of them."""
    if cached is not None:
        return {"inference_log": inference_log}, []
    try:
        source = data_source.snapshot(spec=champion_spec)[0].frame
    except DataSourceError as exc:  # the tick goes on without it
        return {"inference_log": inference_log}, [f"{SOURCE_WINDOW}: unreadable ({exc})"]
    return {SOURCE_WINDOW: source, "inference_log": inference_log}, []


def _retraining_sensor(model: ModelConfig, base: str) -> dict[str, Any]:
    """What ``model``'s retraining sensors share: name, job, interval, RUNNING by default."""
    return {
        "name": model.named(base),
        "job_name": model.job("retraining"),
        "minimum_interval_seconds": 60,
        "default_status": dg.DefaultSensorStatus.RUNNING,
    }


def build_psi_drift_sensor(model: ModelConfig, config: PlatformConfig) -> dg.SensorDefinition:
    """``model``'s drift sensor, judging with ``config.drift`` (threshold, minimum window)."""
    settings = config.drift

    @dg.sensor(
        **_retraining_sensor(model, "psi_drift_sensor"),
        description="Retrain when PSI of any drift feature of the champion's spec against its "
        f"reference profile exceeds CHURN_PSI_THRESHOLD ({settings.threshold}; default "
        f"{DriftSettings.threshold}), on the newest snapshot of the source or on the requests "
        "the model servers scored. One run per drift episode. The latest PSI per feature is "
        f"written to {psi_export_key(model)} in the storage; the router exports it as "
        "churn_feature_psi.",
        required_resource_keys={
            "notifier",
            "storage",
            *model_resource_keys(model, "mlflow_registry", "data_source", "inference_log"),
        },
    )
    def psi_drift_sensor(context: dg.SensorEvaluationContext):
        """Compare current data with the champion's reference profile; one run request (and
        one notification) per drift episode. Every tick that computed PSI writes it to the
        storage (the router's ``churn_feature_psi`` gauges)."""
        return guarded(
            context, model.named("psi_drift_sensor"), lambda: _drift_tick(context, model, settings)
        )

    return psi_drift_sensor


def _drift_tick(context: dg.SensorEvaluationContext, model: ModelConfig, settings: DriftSettings):
    mlflow_registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    inference_log: InferenceLogResource = model_resource(context, model, "inference_log")
    notifier: Notifier = context.resources.notifier
    state = EpisodeState.parse(context.cursor)
    reference = _champion_profile(mlflow_registry)
    if isinstance(reference, dg.SkipReason):
        return reference
    champion, profile = reference
    # the rows the next run would snapshot: for the synthetic source, next week's draw
    week = week_to_run(context.instance, model)
    data_source = model_resource(context, model, "data_source").dated(week_of(week))
    try:  # the champion's own spec: its requests hold its features (profile: its drift ones)
        champion_spec = mlflow_registry.spec_of_version(champion)
    except ValueError as exc:  # a logged spec this code cannot read
        return dg.SkipReason(f"champion version {champion}'s logged spec cannot be read: {exc}")
    # an unchanged snapshot (same fingerprint, same champion) is not read again
    fingerprint = data_source.fingerprint(champion_spec)  # the source is mapped through it
    cached = state.cached_source(champion, fingerprint)
    windows, skipped = _windows(
        data_source, inference_log.window(champion, champion_spec), cached, champion_spec
    )
    decision = judge_tick(state, champion, profile, windows, skipped, cached, fingerprint, settings)
    observations = [
        _observation(model, n, r, champion, settings.threshold) for n, r in decision.results.items()
    ]
    if decision.results:
        key = psi_export_key(model)
        _export_psi(
            context, key, context.resources.storage, champion, decision.results, settings.threshold
        )
    if not (decision.request_run and decision.worst is not None):
        return dg.SensorResult(
            skip_reason=dg.SkipReason(decision.reason),
            asset_events=observations,
            cursor=decision.state.dumps(),
        )
    link = notifier.runs_with_tag_url("dagster/run_key", decision.run_key or "")
    message = Message(DRIFT, champion, drift_reason(decision, settings.threshold), link)
    # a refused message waits in the storage for notification_outbox: the run goes ahead
    told = deliver(notifier, context.resources.storage, message, f"drift-{decision.run_key}")
    context.log.info(f"drift notification: {told}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=decision.run_key, tags=run_tags(decision, champion), partition_key=week
            )
        ],
        asset_events=observations,
        cursor=decision.state.dumps(),
    )


def _last_trained_code_version(instance: dg.DagsterInstance, model: ModelConfig) -> str | None:
    """The code version of ``model``'s newest ``challenger_model`` materialisation (None: never)."""
    event = instance.get_latest_materialization_event(asset_key(model, MODEL_ASSET))
    if event is None or event.asset_materialization is None:
        return None
    return (event.asset_materialization.tags or {}).get(CODE_VERSION_TAG)


def build_code_version_sensor(model: ModelConfig) -> dg.SensorDefinition:
    """``model``'s code-version sensor: its training code and spec hashed now."""
    current = training_code_version(model.spec)

    @dg.sensor(
        **_retraining_sensor(model, "code_version_sensor"),
        description="Retrain once per new code version of challenger_model (a hash of the "
        "feature, training and model-check code, the schema, the data contract and the spec): "
        "when the deployed code differs from the code the newest model was trained with.",
        required_resource_keys={"notifier", "storage"},
    )
    def code_version_sensor(context: dg.SensorEvaluationContext):
        """One retraining run per code version that differs from the last trained one."""
        name = model.named("code_version_sensor")
        return guarded(context, name, lambda: _code_tick(context, model, current))

    return code_version_sensor


def _code_tick(context: dg.SensorEvaluationContext, model: ModelConfig, current: str):
    trained = _last_trained_code_version(context.instance, model)
    if trained is None:
        return dg.SkipReason(
            "challenger_model was never materialised: the first training is the schedule's or "
            "yours, not this sensor's"
        )
    if trained == current:
        return dg.SkipReason(f"challenger_model is up to date with code {current}")
    if context.cursor == current:
        return dg.SkipReason(f"a retraining for code {current} was already requested")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=current,
                partition_key=week_to_run(context.instance, model),
                tags={
                    "churn/trigger": "code",
                    "churn/code_version": current,
                    "churn/previous_code_version": trained,
                },
            )
        ],
        cursor=current,
    )


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}:{stat.st_mtime_ns}:{stat.st_size}"


def build_new_file_sensor(model: ModelConfig) -> dg.SensorDefinition:
    """``model``'s new-file sensor (a folder source)."""

    @dg.sensor(
        **_retraining_sensor(model, "new_file_sensor"),
        description="Retrain once per new (or rewritten) file in a folder source (a file source "
        "whose path is a folder). The files present at its first tick are the baseline.",
        required_resource_keys={"notifier", "storage", *model_resource_keys(model, "data_source")},
    )
    def new_file_sensor(context: dg.SensorEvaluationContext):
        """One retraining run per file that appeared in the source folder since the last tick."""
        return guarded(
            context,
            model.named("new_file_sensor"),
            lambda: _file_tick(context, model, model_resource(context, model, "data_source")),
        )

    return new_file_sensor


def _file_week(name: str, model: ModelConfig, instance: dg.DagsterInstance) -> str:
    """The partition a new file starts: the week its name names (``2026-11-15.parquet``,
    a week of the calendar), else the week a run takes (``week_to_run``)."""
    stem = Path(name).stem
    try:
        week = sunday_of(stem)
    except ValueError:
        week = ""
    if week == stem and data_partitions(model).has_partition_key(week):
        return week
    return week_to_run(instance, model)


def _file_tick(
    context: dg.SensorEvaluationContext, model: ModelConfig, data_source: DataSourceResource
):
    if not isinstance(data_source, FileSourceResource):
        return dg.SkipReason("the data source is not a folder (CHURN_SOURCE is not file)")
    files = data_source.source().folder_files()
    if files is None:
        return dg.SkipReason(f"CHURN_SOURCE_PATH={data_source.path} is not a folder")
    keys = {}
    for file in files:
        try:
            keys[_file_key(file)] = file.name
        except OSError:  # removed between listing and stat: the next tick decides
            continue
    cursor = json.dumps(sorted(keys))
    if context.cursor is None:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"baseline: {len(keys)} file(s) already in the folder"),
            cursor=cursor,
        )
    seen = set(json.loads(context.cursor))
    new = [key for key in sorted(keys) if key not in seen]
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new file"), cursor=cursor)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=key,
                partition_key=_file_week(keys[key], model, context.instance),
                tags={"churn/trigger": "new_data", "churn/file": keys[key]},
            )
            for key in new
        ],
        cursor=cursor,
    )


def build(model: ModelConfig, config: PlatformConfig) -> dg.Definitions:
    """``model``'s jobs, schedule and sensors."""
    return dg.Definitions(
        jobs=build_jobs(model, config.auto_release),
        schedules=[build_schedule(model)],
        sensors=[
            build_psi_drift_sensor(model, config),
            build_code_version_sensor(model),
            build_new_file_sensor(model),
        ],
    )
