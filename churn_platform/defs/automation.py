"""Jobs, the weekly retraining schedule and the PSI drift sensor."""

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
from mlflow.exceptions import MlflowException

from churn_platform.core import drift
from churn_platform.resources.data_source import DataSourceError, DataSourceResource
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


THRESHOLD_VAR = "CHURN_PSI_THRESHOLD"
MIN_ROWS_VAR = "CHURN_DRIFT_MIN_ROWS"
PROFILE_ARTIFACT = "reference_profile.json"


@dataclass(frozen=True)
class DriftSensorConfig:
    """Sensor settings (sensors take no run config), read from the environment at every tick.

    Read at tick time, not at import: a bad value fails the tick with a message naming the
    variable instead of breaking the whole code location, and a changed value needs no reload.
    """

    threshold: float = 0.2
    min_rows: int = 200

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(
                f"{THRESHOLD_VAR}={self.threshold!r} must be a positive number such as 0.2"
            )
        if self.min_rows < 1:
            raise ValueError(f"{MIN_ROWS_VAR}={self.min_rows!r} must be an integer >= 1")

    @classmethod
    def from_env(cls) -> "DriftSensorConfig":
        """``CHURN_PSI_THRESHOLD`` (default 0.2) and ``CHURN_DRIFT_MIN_ROWS`` (default 200)."""
        raw_threshold = os.environ.get(THRESHOLD_VAR, "").strip() or "0.2"
        raw_min_rows = os.environ.get(MIN_ROWS_VAR, "").strip() or "200"
        try:
            threshold = float(raw_threshold)
        except ValueError:
            raise ValueError(
                f"{THRESHOLD_VAR}={raw_threshold!r} is not a number; set e.g. 0.2"
            ) from None
        try:
            min_rows = int(raw_min_rows)
        except ValueError:
            raise ValueError(
                f"{MIN_ROWS_VAR}={raw_min_rows!r} is not an integer; set e.g. 200"
            ) from None
        return cls(threshold=threshold, min_rows=min_rows)


def parse_cursor(raw: str | None) -> dict[str, Any]:
    """The sensor's state: ``episode`` (drift episodes so far), ``in_drift``, ``champion``.

    ``in_drift`` refers to the champion named in the cursor; a cursor written by an older
    version of this sensor (no ``champion``) is completed with defaults.
    """
    state: dict[str, Any] = {"episode": 0, "in_drift": False, "champion": None}
    if not raw:
        return state
    try:
        loaded = json.loads(raw)
    except json.JSONDecodeError:
        loaded = None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("episode", 0), int):
        raise ValueError(
            f"psi_drift_sensor cursor {raw!r} is not this sensor's JSON state "
            '(e.g. {"episode": 1, "in_drift": false, "champion": "3"}); fix or clear it in the UI'
        )
    state.update({k: loaded[k] for k in state if k in loaded})
    return state


def evaluate_drift(
    profile: dict[str, Any], windows: dict[str, pd.DataFrame], min_rows: int
) -> tuple[dict[str, drift.PsiResult], list[str]]:
    """PSI per window (source snapshot, inference log) and the windows skipped, with reasons."""
    results: dict[str, drift.PsiResult] = {}
    skipped: list[str] = []
    for name, frame in windows.items():
        if len(frame) < min_rows:
            skipped.append(f"{name}: {len(frame)} rows, fewer than {min_rows}")
            continue
        result = drift.psi(profile, frame)
        if result.max_psi is None:
            skipped.append(f"{name}: {result.skipped_reason or 'no PSI computed'}")
            continue
        results[name] = result
    return results, skipped


def _observation(
    window: str, result: drift.PsiResult, champion: str, threshold: float
) -> dg.AssetObservation:
    """One window's PSI as an observation of ``churn_snapshot`` (numeric metadata is plotted)."""
    return dg.AssetObservation(
        asset_key="churn_snapshot",
        metadata={
            "drift_window": window,
            "champion_version": champion,
            "threshold": float(threshold),
            "max_psi": round(float(result.max_psi or 0.0), 5),
            "max_psi_feature": result.max_feature or "none",
            "rows": result.n_rows,
            **{f"psi_{feature}": round(value, 5) for feature, value in result.psi.items()},
            **{f"unseen_{feature}": count for feature, count in result.unseen_counts.items()},
        },
    )


def _source_window(data_source: DataSourceResource) -> pd.DataFrame | str:
    """The source's newest snapshot, or why it could not be read (the tick goes on without it)."""
    try:
        return data_source.snapshot()[0].frame
    except DataSourceError as exc:
        return f"source_snapshot: unreadable ({exc})"


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
    config = DriftSensorConfig.from_env()
    cursor = parse_cursor(context.cursor)
    champion = mlflow_registry.alias_version("champion")
    if champion is None:
        return dg.SkipReason("no champion is registered yet: nothing to compare current data with")
    run_id = mlflow_registry.version_info(champion).run_id
    try:
        profile = mlflow_registry.load_json_artifact(run_id, PROFILE_ARTIFACT)
    except MlflowException:
        return dg.SkipReason(
            f"champion version {champion} (MLflow run {run_id}) has no {PROFILE_ARTIFACT}: no "
            "reference to compare with; retrain through challenger_model, which logs one"
        )
    # a drift state belongs to the champion it was measured against: after a new champion,
    # drift against its reference is a new episode (a cursor naming no champion predates this)
    in_drift = bool(cursor["in_drift"]) and cursor["champion"] in (None, champion)
    source = _source_window(data_source)
    windows = {"inference_log": read_inference_log(champion)}
    skipped: list[str] = []
    if isinstance(source, str):
        skipped.append(source)
    else:
        windows = {"source_snapshot": source, **windows}
    results, too_small = evaluate_drift(profile, windows, config.min_rows)
    skipped = [*skipped, *too_small]
    if not results:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no window to judge drift on: {'; '.join(skipped)}"),
            cursor=json.dumps({**cursor, "in_drift": in_drift, "champion": champion}),
        )
    observations = [_observation(n, r, champion, config.threshold) for n, r in results.items()]
    worst_name, worst = max(results.items(), key=lambda item: item[1].max_psi)
    summary = ", ".join(f"{f}={v:.3f}" for f, v in sorted(worst.psi.items(), key=lambda kv: -kv[1]))
    drifting = worst.max_psi > config.threshold
    if drifting and not in_drift:
        episode = int(cursor["episode"]) + 1
        new_cursor = {"episode": episode, "in_drift": True, "champion": champion}
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"drift-episode-{episode}",
                    tags={
                        "churn/trigger": "drift",
                        "churn/drift_feature": worst.max_feature or "",
                        "churn/drift_window": worst_name,
                        "churn/drift_max_psi": f"{worst.max_psi:.4f}",
                        "churn/champion_version": champion,
                    },
                )
            ],
            asset_events=observations,
            cursor=json.dumps(new_cursor),
        )
    if drifting:
        reason = (
            f"drift episode {cursor['episode']} continues ({worst_name} max PSI {worst.max_psi:.3f} "
            f"> {config.threshold} on {worst.max_feature}); its retraining run was already requested"
        )
    else:
        reason = f"max PSI {worst.max_psi:.3f} <= {config.threshold} ({worst_name}: {summary})"
    if skipped:
        reason += f"; skipped {'; '.join(skipped)}"
    return dg.SensorResult(
        skip_reason=dg.SkipReason(reason),
        asset_events=observations,
        cursor=json.dumps({**cursor, "in_drift": drifting, "champion": champion}),
    )
