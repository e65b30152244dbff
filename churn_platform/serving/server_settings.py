"""What a model server or router takes from its environment, as one frozen record.

``python -m churn_platform.serving`` reads the environment once (``__main__.server_settings``)
and hands this record to ``create_app``, ``create_router_app`` and the inference log; no
other serving module reads a variable. The defaults below are the variables' defaults, so
``ServerSettings()`` is a server started in an empty environment (apart from ``home``,
whose default is the local ``CHURN_HOME``, relative to the working directory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churn_platform.object_store import is_remote, open_location

DEFAULT_MAX_BODY_BYTES = 10_000_000
DEFAULT_LOG_MAX_BYTES = 100_000_000
DEFAULT_LOG_BACKUPS = 5
DEFAULT_BODY_READ_TIMEOUT_SECONDS = 30.0
DEFAULT_SERVER_LOG_MAX_BYTES = 10_000_000
DEFAULT_SERVER_LOG_BACKUPS = 3


@dataclass(frozen=True)
class ServerSettings:
    """The serving processes' configuration, each field named after its variable.

    - ``home``: ``CHURN_HOME``, the folder of local state (default ``data``).
    - ``inference_log``: ``CHURN_INFERENCE_LOG``, one server's log file (None:
      ``<home>/inference_log/<version>.jsonl``).
    - ``tracking_uri``: ``MLFLOW_TRACKING_URI`` (None: MLflow's own default).
    - ``fault_rate`` / ``fault_seed`` / ``fault_mode``: ``CHURN_FAULT_RATE`` /
      ``CHURN_FAULT_SEED`` / ``CHURN_FAULT_MODE`` (``error``: 500s; ``shuffle``: other
      records' scores).
    - ``max_body_bytes``: ``CHURN_MAX_BODY_BYTES``.
    - ``body_read_timeout_seconds``: ``CHURN_BODY_READ_TIMEOUT_SECONDS``, how long a
      request body may take to arrive (then 408 and the connection closed).
    - ``server_log_max_bytes`` / ``server_log_backups``: ``CHURN_SERVER_LOG_MAX_BYTES`` /
      ``CHURN_SERVER_LOG_BACKUPS``, the rotation of the process's own log (``--log-file``).
    - ``inference_log_max_bytes`` / ``inference_log_backups``:
      ``CHURN_INFERENCE_LOG_MAX_BYTES`` / ``CHURN_INFERENCE_LOG_BACKUPS``.
    - ``storage_url``: ``CHURN_STORAGE_URL`` ("" : ``home``), with ``storage_options`` the
      s3fs options of an object store (from the AWS variables); ``storage_error`` says why
      the variable is unusable, raised when the storage is first used (a router with a
      bad one keeps routing and only loses its PSI gauges).
    - ``router_admin_token``: ``CHURN_ROUTER_ADMIN_TOKEN`` ("" : admin changes refused).
    - ``environment``: the deployment environment a model server runs in (its
      ``--environment``; "" : production's), which picks its own inference log.
    """

    home: Path = Path("data")
    inference_log: Path | None = None
    tracking_uri: str | None = None
    fault_rate: float = 0.0
    fault_seed: int | None = None
    fault_mode: str = "error"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_read_timeout_seconds: float = DEFAULT_BODY_READ_TIMEOUT_SECONDS
    server_log_max_bytes: int = DEFAULT_SERVER_LOG_MAX_BYTES
    server_log_backups: int = DEFAULT_SERVER_LOG_BACKUPS
    inference_log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    inference_log_backups: int = DEFAULT_LOG_BACKUPS
    storage_url: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    storage_error: str = ""
    router_admin_token: str = ""
    environment: str = ""

    def _storage(self) -> str:
        if self.storage_error:
            raise ValueError(self.storage_error)
        return self.storage_url or str(self.home)

    @property
    def storage_is_remote(self) -> bool:
        """Whether artefacts (inference log batches, the PSI document) go to an object store."""
        return is_remote(self._storage())

    def storage_root(self) -> Path:
        """The storage as a path: the object store's ``UPath``, or the local folder."""
        return open_location(self._storage(), self.storage_options)
