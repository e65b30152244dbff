"""Jobs, the weekly retraining schedule and the sensors: PSI drift, code version, new file."""

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.definitions.data_version import CODE_VERSION_TAG

from churn_platform import settings
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
from churn_platform.defs import model
from churn_platform.defs.data import next_synthetic_week
from churn_platform.resources.data_source import (
    DataSourceError,
    DataSourceResource,
    FileSourceResource,
)
from churn_platform.resources.inference_log import InferenceLogResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import DRIFT, NotificationError, Notifier
from churn_platform.resources.storage import StorageResource

RETRAINING_JOB = "churn_retraining"
RETRAINING_ASSETS = [
    "churn_snapshot",
    "validated_churn_data",
    "holdout_set",
    "challenger_model",
    "evaluation_report",
    "staging_deployment",
]


def retraining_selection(auto_release: bool | None = None) -> dg.AssetSelection:
    """Snapshot through staging; production too when ``auto_release`` (default: the
    ``CHURN_AUTO_RELEASE`` setting, read now)."""
    assets = list(RETRAINING_ASSETS)
    if settings.auto_release() if auto_release is None else auto_release:
        assets.append("production_deployment")
    return dg.AssetSelection.assets(*assets)


def build_retraining_job(auto_release: bool | None = None) -> Any:
    """The retraining job; built when the definitions load, so ``CHURN_AUTO_RELEASE`` is read
    then and not when this module is imported."""
    return dg.define_asset_job(
        RETRAINING_JOB,
        selection=retraining_selection(auto_release),
        description="Snapshot -> validated data -> holdout -> challenger -> evaluation -> staging. "
        "Production waits for a person (materialise production_deployment) unless "
        "CHURN_AUTO_RELEASE=1.",
        tags={"churn/pipeline": "retraining"},
    )


release_job = dg.define_asset_job(
    "churn_release",
    selection=dg.AssetSelection.assets("production_deployment"),
    description="The approval step: release the staged challenger through the production canary.",
    tags={"churn/deployment": "production"},
)

rollback_job = dg.define_asset_job(
    "churn_rollback",
    selection=dg.AssetSelection.assets("production_deployment"),
    description="Rollback on demand: production_deployment in rollback mode, all traffic to the "
    "`previous` version (or ops.production_deployment.config.to_version) and the aliases "
    "swapped. CLI: python -m churn_platform rollback [--to VERSION] [--reason TEXT].",
    tags={"churn/deployment": "production"},
    config={"ops": {"production_deployment": {"config": {"mode": "rollback"}}}},
)

end_to_end_job = dg.define_asset_job(
    "churn_end_to_end",
    selection=dg.AssetSelection.all(),
    description="The whole graph in one run, approval included (the README's first command).",
    tags={"churn/deployment": "production"},
)

weekly_retraining_schedule = dg.ScheduleDefinition(
    name="weekly_retraining",
    job_name=RETRAINING_JOB,
    cron_schedule="0 2 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain every Monday at 02:00 UTC. RUNNING by default: it fires whenever the "
    "Dagster daemon runs (dagster dev starts one); stop it in the UI to pause.",
)


PROFILE_ARTIFACT = "reference_profile.json"


def _observation(
    window: str, result: drift.PsiResult, champion: str, threshold: float
) -> dg.AssetObservation:
    """One window's PSI as an observation of ``churn_snapshot`` (numeric metadata is plotted)."""
    return dg.AssetObservation(
        asset_key="churn_snapshot",
        metadata=observation_metadata(window, result, champion, threshold),
    )


def _export_psi(
    context: dg.SensorEvaluationContext,
    storage: StorageResource,
    champion: str,
    results: dict[str, drift.PsiResult],
    threshold: float,
) -> None:
    """Write the tick's PSI per feature for the router's /metrics; a storage that refuses the
    write costs the gauges their freshness (said in the log), never the retraining decision."""
    try:
        storage.write_text(PSI_EXPORT_KEY, psi_export(champion, results, threshold, time.time()))
    except OSError as exc:
        context.log.warning(f"could not write {PSI_EXPORT_KEY}: {exc}")


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
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The windows to judge now (the source's newest snapshot unless its PSI is ``cached``,
    then the requests the servers scored) and the ones that could not be read."""
    if cached is not None:
        return {"inference_log": inference_log}, []
    try:
        source = data_source.snapshot()[0].frame
    except DataSourceError as exc:  # the tick goes on without it
        return {"inference_log": inference_log}, [f"{SOURCE_WINDOW}: unreadable ({exc})"]
    return {SOURCE_WINDOW: source, "inference_log": inference_log}, []


@dg.sensor(
    name="psi_drift_sensor",
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain when PSI of any drift feature of the champion's spec against its "
    "reference profile exceeds "
    f"CHURN_PSI_THRESHOLD (default {DriftSettings.threshold}), on the newest snapshot of the source or on the requests the "
    "model servers scored. One run per drift episode. The latest PSI per feature is written to "
    f"{PSI_EXPORT_KEY} in the storage; the router exports it as churn_feature_psi.",
)
def psi_drift_sensor(
    context: dg.SensorEvaluationContext,
    mlflow_registry: MlflowRegistry,
    data_source: DataSourceResource,
    inference_log: InferenceLogResource,
    notifier: Notifier,
    storage: StorageResource,
):
    """Compare current data with the champion's reference profile; one run request (and one
    notification) per drift episode. Every tick that computed PSI writes it to
    ``monitoring/feature_psi.json`` in the storage (the router's ``churn_feature_psi`` gauges)."""
    drift_settings = settings.drift_settings()
    state = EpisodeState.parse(context.cursor)
    reference = _champion_profile(mlflow_registry)
    if isinstance(reference, dg.SkipReason):
        return reference
    champion, profile = reference
    # the rows the next run would snapshot: for the synthetic source, next week's draw
    data_source = data_source.dated(next_synthetic_week(context.instance))
    # an unchanged snapshot (same fingerprint, same champion) is not read again
    fingerprint = data_source.fingerprint()
    cached = state.cached_source(champion, fingerprint)
    try:  # the champion's own spec: its requests hold its features (profile: its drift ones)
        champion_spec = mlflow_registry.spec_of_version(champion)
    except ValueError as exc:  # a logged spec this code cannot read
        return dg.SkipReason(f"champion version {champion}'s logged spec cannot be read: {exc}")
    windows, skipped = _windows(data_source, inference_log.window(champion, champion_spec), cached)
    decision = judge_tick(
        state, champion, profile, windows, skipped, cached, fingerprint, drift_settings
    )
    observations = [
        _observation(n, r, champion, drift_settings.threshold) for n, r in decision.results.items()
    ]
    if decision.results:
        _export_psi(context, storage, champion, decision.results, drift_settings.threshold)
    if not (decision.request_run and decision.worst is not None):
        return dg.SensorResult(
            skip_reason=dg.SkipReason(decision.reason),
            asset_events=observations,
            cursor=decision.state.dumps(),
        )
    try:
        notifier.notify(
            DRIFT,
            champion,
            drift_reason(decision, drift_settings.threshold),
            notifier.runs_with_tag_url("dagster/run_key", decision.run_key or ""),
        )
    except NotificationError as exc:  # the retraining matters more than the message
        context.log.warning(str(exc))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=decision.run_key, tags=run_tags(decision, champion))],
        asset_events=observations,
        cursor=decision.state.dumps(),
    )


def _last_trained_code_version(instance: dg.DagsterInstance) -> str | None:
    """The code version of the newest ``challenger_model`` materialisation (None: never)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(model.ASSET))
    if event is None or event.asset_materialization is None:
        return None
    return (event.asset_materialization.tags or {}).get(CODE_VERSION_TAG)


@dg.sensor(
    name="code_version_sensor",
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain once per new code version of challenger_model (a hash of the feature, "
    "training and model-check code, the schema and the data contract): when the deployed code "
    "differs from the code the newest model was trained with.",
)
def code_version_sensor(context: dg.SensorEvaluationContext):
    """One ``churn_retraining`` run per code version that differs from the last trained one."""
    current = model.CODE_VERSION
    trained = _last_trained_code_version(context.instance)
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


@dg.sensor(
    name="new_file_sensor",
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain once per new (or rewritten) file in a folder source (CHURN_SOURCE=file "
    "with CHURN_SOURCE_PATH a folder). The files present at its first tick are the baseline.",
)
def new_file_sensor(context: dg.SensorEvaluationContext, data_source: DataSourceResource):
    """One ``churn_retraining`` run per file that appeared in the source folder since the last tick."""
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
            dg.RunRequest(run_key=key, tags={"churn/trigger": "new_data", "churn/file": keys[key]})
            for key in new
        ],
        cursor=cursor,
    )
