"""Resources per environment, picked by ``CHURN_ENV`` (``local`` by default, or ``kubernetes``).

Every setting comes from an environment variable declared in ``churn_platform.settings``
(``python -m churn_platform settings`` lists them with the values in effect), so that
`dagster dev`, `dagster job execute`, the tests and a Kubernetes pod all configure the
platform the same way. They are read when the definitions load, never at import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from churn_platform import settings
from churn_platform.core.mapping import ColumnMapping, DataSourceError
from churn_platform.resources.code_version import CodeVersion
from churn_platform.resources.data_source import (
    DataSourceResource,
    FileSourceResource,
    SqlSourceResource,
    SyntheticSourceResource,
)
from churn_platform.resources.deployment import LocalDeploymentResource
from churn_platform.resources.inference_log import InferenceLogResource
from churn_platform.resources.io_manager import DataIOManager
from churn_platform.resources.metrics import MetricsResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import Notifier
from churn_platform.resources.object_store import S3Credentials
from churn_platform.resources.release_probes import ReleaseProbes
from churn_platform.resources.storage import StorageResource


def _get(name: str) -> Any:
    return settings.get(name)


def load_mapping_file(path: str) -> dict[str, Any]:
    """Read a column mapping (YAML or JSON) with keys `columns`, `values`, `keep_extra_columns`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise settings.SettingsError(
            f"CHURN_MAPPING_FILE={path!r} does not exist; point it at a YAML or JSON mapping file"
        )
    text = file.read_text()
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise settings.SettingsError(
            f"CHURN_MAPPING_FILE={path!r} is not valid YAML/JSON: {exc}"
        ) from exc
    data = data or {}
    unknown = sorted(set(data) - {"columns", "values", "keep_extra_columns"})
    if unknown:
        raise settings.SettingsError(
            f"CHURN_MAPPING_FILE={path!r} has unknown key(s) {unknown}; use columns, values, keep_extra_columns"
        )
    values = {
        col: {str(k): str(v) for k, v in m.items()} for col, m in (data.get("values") or {}).items()
    }
    return {
        "columns": {str(k): str(v) for k, v in (data.get("columns") or {}).items()},
        "values": values,
        "keep_extra_columns": bool(data.get("keep_extra_columns", False)),
    }


def data_source_from_env() -> DataSourceResource:
    """The data source named by ``CHURN_SOURCE`` and its settings."""
    kind = _get("CHURN_SOURCE")
    mapping_file = _get("CHURN_MAPPING_FILE")
    mapping = load_mapping_file(mapping_file) if mapping_file else {}
    if mapping:
        # the explicit mapping is merged over the spec's: its names must be the spec's columns
        try:
            ColumnMapping.from_dict(mapping, spec=settings.current_spec())
        except DataSourceError as exc:
            raise settings.SettingsError(f"CHURN_MAPPING_FILE={mapping_file!r}: {exc}") from None
    if kind == "synthetic":
        return SyntheticSourceResource(
            n_rows=_get("CHURN_SYNTHETIC_ROWS"),
            seed=_get("CHURN_SYNTHETIC_SEED"),
            spend_shift=_get("CHURN_SYNTHETIC_SPEND_SHIFT"),
            as_of=_get("CHURN_SYNTHETIC_AS_OF"),
            **mapping,
        )
    if kind == "file":
        if not _get("CHURN_SOURCE_PATH"):
            raise settings.SettingsError(
                "CHURN_SOURCE=file needs CHURN_SOURCE_PATH: a CSV/Parquet file or a folder of them"
            )
        return FileSourceResource(path=_get("CHURN_SOURCE_PATH"), **mapping)
    url, table, query = (_get(f"CHURN_SOURCE_{k}") for k in ("URL", "TABLE", "QUERY"))
    if not url or not (table or query):
        raise settings.SettingsError(
            "CHURN_SOURCE=sql needs CHURN_SOURCE_URL (a SQLAlchemy URL) and CHURN_SOURCE_TABLE "
            "or CHURN_SOURCE_QUERY"
        )
    # as dg.EnvVar: the UI shows CHURN_SOURCE_URL, never the URL and its password
    return SqlSourceResource(url=dg.EnvVar("CHURN_SOURCE_URL"), table=table, query=query, **mapping)


def _env_var_if_set(name: str) -> Any:
    """``dg.EnvVar(name)`` when the variable is set (the UI shows its name), else ``""``."""
    return dg.EnvVar(name) if _get(name) else ""


def notifier_from_env() -> Notifier:
    """Webhook and Slack from ``CHURN_WEBHOOK_URL`` / ``CHURN_SLACK_TOKEN`` (as ``dg.EnvVar``)."""
    return Notifier(
        webhook_url=_env_var_if_set("CHURN_WEBHOOK_URL"),
        slack_token=_env_var_if_set("CHURN_SLACK_TOKEN"),
        slack_channel=_get("CHURN_SLACK_CHANNEL"),
        ui_url=_get("CHURN_DAGSTER_URL"),
    )


def resources_for_environment(env: str | None = None) -> dict[str, Any]:
    """The resource dict for ``env`` (default: ``CHURN_ENV``)."""
    env = env or settings.environment()
    url = settings.storage_url()
    # credentials as dg.EnvVar: the UI shows the variables' names, never their values
    s3 = S3Credentials.from_env() if settings.storage_is_remote() else S3Credentials()
    common = {
        "io_manager": DataIOManager(base_dir=f"{url}/storage", s3=s3),
        "storage": StorageResource(base_url=url, s3=s3),
        "mlflow_registry": MlflowRegistry(tracking_uri=_get("MLFLOW_TRACKING_URI")),
        "data_source": data_source_from_env(),
        "inference_log": InferenceLogResource(
            storage_url=url if settings.storage_is_remote() else "", s3=s3
        ),
        "metrics_source": MetricsResource(
            prometheus_url=_get("PROMETHEUS_URL"),
            # the local file_sd targets carry environment=<staging|production>
            environment_label="production" if env == "local" else "",
        ),
        "release_probes": ReleaseProbes(),
        "code_version": CodeVersion(commit=_get("GIT_COMMIT") or ""),
        "notifier": notifier_from_env(),
    }
    if env == "local":
        return {
            **common,
            "deployment": LocalDeploymentResource(
                staging_router_port=_get("CHURN_STAGING_PORT"),
                production_router_port=_get("CHURN_PRODUCTION_PORT"),
            ),
        }
    from churn_platform.resources.deployment import KubernetesDeploymentResource

    return {**common, "deployment": KubernetesDeploymentResource.from_env()}
