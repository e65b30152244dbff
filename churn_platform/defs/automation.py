"""Jobs, the weekly retraining schedule and the PSI drift sensor."""

import json
import os
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core import drift
from churn_platform.resources.data_source import DataSourceResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.serving.inference_log import read_inference_log

RETRAINING_ASSETS = [
    "churn_snapshot",
    "validated_churn_data",
    "holdout_set",
    "challenger_model",
    "evaluation_report",
    "staging_deployment",
]
AUTO_RELEASE_VAR = "CHURN_AUTO_RELEASE"


def retraining_selection() -> dg.AssetSelection:
    """Snapshot through staging; production too only when ``CHURN_AUTO_RELEASE=1``."""
    assets = list(RETRAINING_ASSETS)
    if os.environ.get(AUTO_RELEASE_VAR, "0") == "1":
        assets.append("production_deployment")
    return dg.AssetSelection.assets(*assets)


retraining_job = dg.define_asset_job(
    "churn_retraining",
    selection=retraining_selection(),
    description="Snapshot -> validated data -> holdout -> challenger -> evaluation -> staging. "
    "Production waits for a person (materialise production_deployment) unless CHURN_AUTO_RELEASE=1.",
    tags={"churn/pipeline": "retraining"},
)

release_job = dg.define_asset_job(
    "churn_release",
    selection=dg.AssetSelection.assets("production_deployment"),
    description="The approval step: release the staged challenger through the production canary.",
    tags={"churn/deployment": "production"},
)

end_to_end_job = dg.define_asset_job(
    "churn_end_to_end",
    selection=dg.AssetSelection.all(),
    description="The whole graph in one run, approval included (the README's first command).",
    tags={"churn/deployment": "production"},
)

weekly_retraining_schedule = dg.ScheduleDefinition(
    name="weekly_retraining",
    job=retraining_job,
    cron_schedule="0 2 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain every Monday at 02:00 UTC. RUNNING by default: it fires whenever the "
    "Dagster daemon runs (dagster dev starts one); stop it in the UI to pause.",
)


class DriftSensorConfig:
    """Sensor settings from the environment (sensors take no run config)."""

    threshold = float(os.environ.get("CHURN_PSI_THRESHOLD", "0.2"))
    min_rows = int(os.environ.get("CHURN_DRIFT_MIN_ROWS", "200"))


def _cursor(raw: str | None) -> dict[str, Any]:
    return json.loads(raw) if raw else {"episode": 0, "in_drift": False}


def evaluate_drift(
    profile: dict[str, Any], windows: dict[str, pd.DataFrame], threshold: float, min_rows: int
) -> tuple[dict[str, drift.PsiResult], list[str]]:
    """PSI per window (source snapshot, inference log) and the windows skipped, with reasons."""
    results: dict[str, drift.PsiResult] = {}
    skipped: list[str] = []
    for name, frame in windows.items():
        if len(frame) < min_rows:
            skipped.append(f"{name}: {len(frame)} rows, fewer than {min_rows}")
            continue
        results[name] = drift.psi(profile, frame)
    return results, skipped


@dg.sensor(
    name="psi_drift_sensor",
    job=retraining_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrain when PSI of any feature against the champion's reference profile exceeds "
    "0.2 (CHURN_PSI_THRESHOLD), on the newest snapshot of the source or on the requests the "
    "model servers scored. One run per drift episode.",
)
def psi_drift_sensor(
    context: dg.SensorEvaluationContext,
    mlflow_registry: MlflowRegistry,
    data_source: DataSourceResource,
):
    """Compare current data with the champion's reference profile; one run request per drift episode."""
    cursor = _cursor(context.cursor)
    champion = mlflow_registry.alias_version("champion")
    if champion is None:
        return dg.SkipReason("no champion is registered yet: nothing to compare current data with")
    run_id = mlflow_registry.version_info(champion).run_id
    profile = mlflow_registry.load_json_artifact(run_id, "reference_profile.json")
    windows = {
        "source_snapshot": data_source.snapshot()[0].frame,
        "inference_log": read_inference_log(champion),
    }
    results, skipped = evaluate_drift(
        profile, windows, DriftSensorConfig.threshold, DriftSensorConfig.min_rows
    )
    if not results:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no window to judge drift on: {'; '.join(skipped)}"),
            cursor=json.dumps(cursor),
        )
    observations = [
        dg.AssetObservation(
            asset_key="churn_snapshot",
            metadata={
                "drift_window": name,
                "champion_version": champion,
                "max_psi": round(r.max_psi, 5),
                "max_psi_feature": r.max_feature or "none",
                "rows": r.n_rows,
                **{f"psi_{feature}": round(value, 5) for feature, value in r.psi.items()},
            },
        )
        for name, r in results.items()
    ]
    worst_name, worst = max(results.items(), key=lambda item: item[1].max_psi)
    summary = ", ".join(f"{f}={v:.3f}" for f, v in sorted(worst.psi.items(), key=lambda kv: -kv[1]))
    drifting = worst.max_psi > DriftSensorConfig.threshold
    if drifting and not cursor["in_drift"]:
        episode = cursor["episode"] + 1
        new_cursor = {"episode": episode, "in_drift": True, "champion": champion}
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"drift-episode-{episode}",
                    tags={"churn/trigger": "drift", "churn/drift_feature": worst.max_feature or ""},
                )
            ],
            asset_events=observations,
            cursor=json.dumps(new_cursor),
        )
    if drifting:
        reason = (
            f"drift episode {cursor['episode']} continues ({worst_name} max PSI {worst.max_psi:.3f} on "
            f"{worst.max_feature}); its retraining run was already requested"
        )
    else:
        reason = f"max PSI {worst.max_psi:.3f} <= {DriftSensorConfig.threshold} ({worst_name}: {summary})"
    if skipped:
        reason += f"; skipped {'; '.join(skipped)}"
    return dg.SensorResult(
        skip_reason=dg.SkipReason(reason),
        asset_events=observations,
        cursor=json.dumps({**cursor, "in_drift": drifting}),
    )
