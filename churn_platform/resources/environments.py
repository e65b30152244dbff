"""Resources per environment, picked by ``CHURN_ENV`` (``local`` by default, or ``kubernetes``).

Settings come from environment variables so that `dagster dev`, `dagster job execute`,
the tests and a Kubernetes pod all configure the platform the same way:

| variable | meaning | default |
|---|---|---|
| `CHURN_SOURCE` | `synthetic`, `file` or `sql` | `synthetic` |
| `CHURN_SOURCE_PATH` | CSV/Parquet file, or a folder whose newest file is the snapshot | (file) |
| `CHURN_SOURCE_URL` / `CHURN_SOURCE_TABLE` / `CHURN_SOURCE_QUERY` | SQLAlchemy URL and table or query | (sql) |
| `CHURN_MAPPING_FILE` | YAML/JSON column mapping: `columns`, `values`, `keep_extra_columns` | none |
| `CHURN_SYNTHETIC_ROWS` / `CHURN_SYNTHETIC_SEED` / `CHURN_SYNTHETIC_SPEND_SHIFT` | synthetic knobs | 20000 / 7 / 0 |
| `MLFLOW_TRACKING_URI` | MLflow store | `sqlite:///$CHURN_HOME/mlflow/mlflow.db` |
| `PROMETHEUS_URL` | canary metrics from Prometheus; unset = scrape the servers | unset |
| `CHURN_STAGING_PORT` / `CHURN_PRODUCTION_PORT` | local router ports (0 = pick a free one once) | 0 |
| `CHURN_MODEL_SERVER_IMAGE`, `CHURN_K8S_NAMESPACE`, `CHURN_GATEWAY_NAME`, `CHURN_GATEWAY_NAMESPACE` | Kubernetes target | see deploy/helm |
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from churn_platform import settings
from churn_platform.resources.code_version import CodeVersion
from churn_platform.resources.data_source import (
    DataSourceResource,
    FileSourceResource,
    SqlSourceResource,
    SyntheticSourceResource,
)
from churn_platform.resources.deployment import LocalDeploymentResource
from churn_platform.resources.metrics import MetricsResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.release_probes import ReleaseProbes

SOURCES = ("synthetic", "file", "sql")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def load_mapping_file(path: str) -> dict[str, Any]:
    """Read a column mapping (YAML or JSON) with keys `columns`, `values`, `keep_extra_columns`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(
            f"CHURN_MAPPING_FILE={path!r} does not exist; point it at a YAML or JSON mapping file"
        )
    text = file.read_text()
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"CHURN_MAPPING_FILE={path!r} is not valid YAML/JSON: {exc}") from exc
    data = data or {}
    unknown = sorted(set(data) - {"columns", "values", "keep_extra_columns"})
    if unknown:
        raise ValueError(
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
    kind = _env("CHURN_SOURCE", "synthetic") or "synthetic"
    if kind not in SOURCES:
        raise ValueError(
            f"CHURN_SOURCE={kind!r} is not a source; set it to one of {', '.join(SOURCES)}"
        )
    mapping = load_mapping_file(_env("CHURN_MAPPING_FILE")) if _env("CHURN_MAPPING_FILE") else {}
    if kind == "synthetic":
        return SyntheticSourceResource(
            n_rows=int(_env("CHURN_SYNTHETIC_ROWS", "20000")),
            seed=int(_env("CHURN_SYNTHETIC_SEED", "7")),
            spend_shift=float(_env("CHURN_SYNTHETIC_SPEND_SHIFT", "0")),
            **mapping,
        )
    if kind == "file":
        if not _env("CHURN_SOURCE_PATH"):
            raise ValueError(
                "CHURN_SOURCE=file needs CHURN_SOURCE_PATH: a CSV/Parquet file or a folder of them"
            )
        return FileSourceResource(path=_env("CHURN_SOURCE_PATH"), **mapping)
    if not _env("CHURN_SOURCE_URL") or not (
        _env("CHURN_SOURCE_TABLE") or _env("CHURN_SOURCE_QUERY")
    ):
        raise ValueError(
            "CHURN_SOURCE=sql needs CHURN_SOURCE_URL (a SQLAlchemy URL) and CHURN_SOURCE_TABLE or CHURN_SOURCE_QUERY"
        )
    return SqlSourceResource(
        url=_env("CHURN_SOURCE_URL"),
        table=_env("CHURN_SOURCE_TABLE"),
        query=_env("CHURN_SOURCE_QUERY"),
        **mapping,
    )


def resources_for_environment(env: str | None = None) -> dict[str, Any]:
    """The resource dict for ``env`` (default: ``CHURN_ENV``)."""
    env = env or settings.environment()
    common = {
        "io_manager": dg.FilesystemIOManager(base_dir=str(settings.churn_home() / "storage")),
        "mlflow_registry": MlflowRegistry(tracking_uri=_env("MLFLOW_TRACKING_URI")),
        "data_source": data_source_from_env(),
        "metrics_source": MetricsResource(
            prometheus_url=_env("PROMETHEUS_URL"),
            # the local file_sd targets carry environment=<staging|production>
            environment_label="production" if env == "local" else "",
        ),
        "release_probes": ReleaseProbes(),
        "code_version": CodeVersion(commit=_env("GIT_COMMIT")),
    }
    if env == "local":
        return {
            **common,
            "deployment": LocalDeploymentResource(
                staging_router_port=int(_env("CHURN_STAGING_PORT", "0")),
                production_router_port=int(_env("CHURN_PRODUCTION_PORT", "0")),
            ),
        }
    from churn_platform.resources.kubernetes_target import KubernetesDeploymentResource

    return {**common, "deployment": KubernetesDeploymentResource.from_env()}
