"""The one ``Definitions`` object: assets, checks, jobs, schedule, sensor and resources per environment.

``CHURN_ENV`` picks the resources (``local`` by default, or ``kubernetes``); see
``churn_platform.resources.environments``. ``dagster dev -w workspace.yaml`` loads this.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_platform import settings
from churn_platform.core.spec import Spec, SpecError


class InvalidSettingsError(settings.SettingsError, dg.DagsterError):
    """A setting or the table spec is invalid; the message names it, the key and the fix.

    A ``SettingsError`` (the CLI reports it as a configuration error) and a ``DagsterError``,
    so that Dagster's loader passes it through as the code location's load error (any other exception is wrapped in "Error occurred during the loading of
    Dagster definitions", which the UI shows first): the UI and ``dagster definitions
    validate`` show this message as the first line.
    """


try:  # the asset modules read the spec when imported (their check names are fixed then)
    from churn_platform.defs import automation, data, deployment, evaluation, model, notifications
except (settings.SettingsError, SpecError) as exc:
    raise InvalidSettingsError(str(exc)) from None
from churn_platform.resources.environments import resources_for_environment  # noqa: E402

ASSETS = [
    data.churn_snapshot,
    data.validated_churn_data,
    data.holdout_set,
    model.challenger_model,
    evaluation.evaluation_report,
    deployment.staging_deployment,
    deployment.production_deployment,
]


def assets_for(spec: Spec) -> list[dg.AssetsDefinition]:
    """``ASSETS`` with the contract's asset checks of ``spec`` (their names are fixed now)."""
    validated = data.build_validated_churn_data(spec)
    return [validated if a is data.validated_churn_data else a for a in ASSETS]


def build_definitions() -> dg.Definitions:
    """Build the definitions for the environment in ``CHURN_ENV`` and the spec in ``CHURN_SPEC``;
    every setting is read now, not at import, and a bad one stops here with a message naming
    it (a bad spec: its key, line and fix)."""
    spec = settings.current_spec()
    return dg.Definitions(
        assets=assets_for(spec),
        jobs=[
            automation.build_retraining_job(),
            automation.release_job,
            automation.rollback_job,
            automation.end_to_end_job,
        ],
        schedules=[automation.weekly_retraining_schedule],
        sensors=[
            automation.psi_drift_sensor,
            automation.code_version_sensor,
            automation.new_file_sensor,
            notifications.rollback_notification,
            notifications.blocking_check_notification,
        ],
        resources=resources_for_environment(),
        executor=executor_for_environment(),
    )


def executor_for_environment() -> dg.ExecutorDefinition:
    """In-process locally (about 4x faster than a process per step); on Kubernetes a pod per
    step (``k8s_job_executor``), the training step sized by its ``dagster-k8s/config`` tag.
    With ``CHURN_STORAGE_URL`` on an object store the step pods mount nothing (credentials come
    from the run's Secret); with local storage every pod mounts the shared ``churn-home``
    claim at ``CHURN_HOME``, where the IO manager writes."""
    if settings.environment() == "local":
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(), name="churn_k8s_executor")


def k8s_executor_config() -> dict[str, Any]:
    """The step pods' config: environment, and the ``churn-home`` claim unless artefacts go to
    an object store."""
    home = str(settings.home_path())
    env_vars = [f"CHURN_HOME={home}", "CHURN_ENV=kubernetes"]
    if settings.storage_is_remote():
        return {"env_vars": [*env_vars, f"{settings.STORAGE_VAR}={settings.storage_url()}"]}
    return {
        "env_vars": env_vars,
        "volumes": [{"name": "churn-home", "persistentVolumeClaim": {"claimName": "churn-home"}}],
        "volume_mounts": [{"name": "churn-home", "mountPath": home}],
    }


try:
    defs = build_definitions()
except (settings.SettingsError, SpecError) as exc:
    # the message names the variable and the fix; the loader's stack adds nothing to it
    raise InvalidSettingsError(str(exc)) from None
