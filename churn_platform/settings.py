"""Where the platform keeps its local state, and which environment it runs in.

One variable picks the environment (``CHURN_ENV``: ``local`` by default, or
``kubernetes``); one variable moves all local state (``CHURN_HOME``, default
``./data`` under the working directory). Nothing else is global.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CHURN_ENV"
HOME_VAR = "CHURN_HOME"
ENVIRONMENTS = ("local", "kubernetes")
MODEL_NAME = "churn_model"


def environment() -> str:
    """The environment name from ``CHURN_ENV`` (default ``local``), validated."""
    env = os.environ.get(ENV_VAR, "local").strip() or "local"
    if env not in ENVIRONMENTS:
        raise ValueError(
            f"{ENV_VAR}={env!r} is not a known environment; set it to one of {', '.join(ENVIRONMENTS)}"
        )
    return env


def churn_home() -> Path:
    """The folder for local state (snapshots, MLflow store, deployments); created on demand."""
    home = Path(os.environ.get(HOME_VAR, "data")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_mlflow_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store under ``CHURN_HOME``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    folder = churn_home() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def default_artifact_location() -> str:
    """Artifact root for the local SQLite store (a folder beside the database)."""
    folder = churn_home() / "mlflow" / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()
