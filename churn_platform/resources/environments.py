"""Resources and the executor built from the platform configuration, per environment.

``platform_resources(config)`` is the one place that turns a ``PlatformConfig`` into Dagster
resources: the shared ones (IO manager, storage, notifier, metrics, probes, code version,
inference logs) once, and per model its data source, MLflow registry and deployment target
under the model's resource keys (``ModelConfig.resource_key``). The environment
(``local`` or ``kubernetes``) picks the deployment target and the executor here and nowhere
else. Secrets are
passed as ``dg.EnvVar`` so the UI shows the variables' names, never their values.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_platform.config import ModelConfig, PlatformConfig, SourceConfig, load_config
from churn_platform.resources.code_version import CodeVersion
from churn_platform.resources.data_source import (
    DataSourceResource,
    FileSourceResource,
    SqlSourceResource,
    SyntheticSourceResource,
)
from churn_platform.resources.deployment_target import LocalDeploymentResource
from churn_platform.resources.inference_log_reader import InferenceLogResource
from churn_platform.resources.io_manager import DataIOManager
from churn_platform.resources.metrics_source import MetricsResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import Notifier
from churn_platform.resources.outcome_source import OutcomeSourceResource
from churn_platform.resources.release_probes import ReleaseProbes
from churn_platform.resources.s3_credentials import S3Credentials
from churn_platform.resources.scores_table import ScoresTableResource
from churn_platform.resources.storage import StorageResource
from churn_platform.settings import STORAGE_VAR

DATA_SOURCE = "data_source"
REGISTRY = "mlflow_registry"
DEPLOYMENT = "deployment"
INFERENCE_LOG = "inference_log"
MODEL_RESOURCES = (DATA_SOURCE, REGISTRY, DEPLOYMENT, INFERENCE_LOG)


def data_source_for(source: SourceConfig) -> DataSourceResource:
    """The data source resource a model's ``SourceConfig`` describes."""
    mapping = dict(source.mapping)
    if source.kind == "synthetic":
        return SyntheticSourceResource(
            n_rows=source.rows,
            seed=source.seed,
            spend_shift=source.spend_shift,
            concept_drift=source.concept_drift,
            as_of=source.as_of,
            **mapping,
        )
    if source.kind == "file":
        return FileSourceResource(path=source.path, **mapping)
    # as dg.EnvVar: the UI shows the variable's name, never the URL and its password
    return SqlSourceResource(
        url=dg.EnvVar(source.url_env), table=source.table, query=source.query, **mapping
    )


def notifier_for(config: PlatformConfig) -> Notifier:
    """Webhook and Slack (their secrets as ``dg.EnvVar``) and the UI address for links."""
    return Notifier(
        webhook_url=dg.EnvVar("CHURN_WEBHOOK_URL") if config.notify.webhook_set else "",
        slack_token=dg.EnvVar("CHURN_SLACK_TOKEN") if config.notify.slack_set else "",
        slack_channel=config.notify.slack_channel,
        ui_url=config.notify.ui_url,
    )


def registry_for(config: PlatformConfig, model: ModelConfig) -> MlflowRegistry:
    """The MLflow registry of ``model``: its registered model and experiment in the store."""
    return MlflowRegistry(
        tracking_uri=config.mlflow_uri,
        artifact_location=config.artifact_location(),
        model_name=model.registered_model,
        experiment_name="churn" if not model.prefixed else model.experiment_name,
    )


def deployment_for(config: PlatformConfig, model: ModelConfig) -> Any:
    """The deployment target resource of ``model`` in ``config``'s environment."""
    if config.environment == "local":
        return LocalDeploymentResource(
            state_dir=str(model.state_dir(config.home)),
            tracking_uri=config.mlflow_uri,
            staging_router_port=model.staging_port,
            production_router_port=model.production_port,
            inference_log_dir=str(_log_dir(config, model)),
        )
    from churn_platform.resources.deployment_target import KubernetesDeploymentResource

    return KubernetesDeploymentResource.from_settings(
        config.kubernetes, model_name=model.registered_model
    )


def _log_dir(config: PlatformConfig, model: ModelConfig) -> Any:
    """Where ``model``'s local servers write their inference logs."""
    return (
        model.state_dir(config.home).parent / "inference_log"
        if model.prefixed
        else (config.home / "inference_log")
    )


def model_resources(
    config: PlatformConfig, model: ModelConfig, s3: S3Credentials
) -> dict[str, Any]:
    """``model``'s own resources under its resource keys."""
    return {
        model.resource_key(DATA_SOURCE): data_source_for(model.source),
        model.resource_key(REGISTRY): registry_for(config, model),
        model.resource_key(DEPLOYMENT): deployment_for(config, model),
        model.resource_key(INFERENCE_LOG): InferenceLogResource(
            log_dir="" if config.storage_remote else str(_log_dir(config, model)),
            storage_url=config.storage_url if config.storage_remote else "",
            s3=s3,
        ),
    }


def platform_resources(config: PlatformConfig | None = None) -> dict[str, Any]:
    """Every resource of the platform: shared ones, then each model's (default config:
    ``load_config()``, the environment now)."""
    config = config or load_config()
    url = config.storage_url
    # credentials as dg.EnvVar: the UI shows the variables' names, never their values
    s3 = S3Credentials.from_env() if config.storage_remote else S3Credentials()
    shared: dict[str, Any] = {
        "io_manager": DataIOManager(base_dir=f"{url}/storage", s3=s3),
        "storage": StorageResource(base_url=url, s3=s3),
        "metrics_source": MetricsResource(
            prometheus_url=config.prometheus_url,
            # the local file_sd targets carry environment=<staging|production>
            environment_label="production" if config.environment == "local" else "",
        ),
        "release_probes": ReleaseProbes(),
        "code_version": CodeVersion(commit=config.git_commit),
        "notifier": notifier_for(config),
        "outcome_source": OutcomeSourceResource(),
        # as dg.EnvVar: the UI shows the variable's name, never the URL and its password
        "scores_table": ScoresTableResource(
            url=dg.EnvVar("CHURN_SCORES_URL") if config.scores.database_set else ""
        ),
    }
    for model in config.models:
        shared.update(model_resources(config, model, s3))
    return shared


def resources_for_environment(env: str | None = None) -> dict[str, Any]:
    """``platform_resources`` of the environment now, ``env`` overriding ``CHURN_ENV``."""
    config = load_config()
    if env is not None and env != config.environment:
        from dataclasses import replace

        config = replace(config, environment=env)
    return platform_resources(config)


def executor_for(config: PlatformConfig) -> dg.ExecutorDefinition:
    """In-process locally (about 4x faster than a process per step); on Kubernetes a pod per
    step (``k8s_job_executor``), the training step sized by its ``dagster-k8s/config`` tag.
    With an object store the step pods mount nothing (credentials come from the run's
    Secret); with local storage every pod mounts the shared ``churn-home`` claim at
    ``CHURN_HOME``, where the IO manager writes."""
    if config.environment == "local":
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(config), name="churn_k8s_executor")


def k8s_executor_config(config: PlatformConfig) -> dict[str, Any]:
    """The step pods' config: environment, and the ``churn-home`` claim unless artefacts go to
    an object store."""
    home = str(config.home)
    env_vars = [f"CHURN_HOME={home}", "CHURN_ENV=kubernetes"]
    if config.platform_file:
        env_vars.append(f"CHURN_PLATFORM={config.platform_file}")
    if config.storage_remote:
        return {"env_vars": [*env_vars, f"{STORAGE_VAR}={config.storage_url}"]}
    return {
        "env_vars": env_vars,
        "volumes": [{"name": "churn-home", "persistentVolumeClaim": {"claimName": "churn-home"}}],
        "volume_mounts": [{"name": "churn-home", "mountPath": home}],
    }
