"""The model servers' inference logs as a resource: the drift sensor's window of served requests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from churn_platform.core.spec import Spec
from churn_platform.resources.s3_credentials import S3Credentials, open_location
from churn_platform.serving.inference_log import (
    read_inference_log,
    read_object_log,
)


class InferenceLogResource(dg.ConfigurableResource):
    """Reads the newest scored requests of a model version.

    ``storage_url`` set (an ``s3://`` URL or folder, as ``CHURN_STORAGE_URL``) reads the
    servers' Parquet batches under ``<storage_url>/inference_log/<version>/``, with ``s3``
    as credentials. Otherwise ``log_dir`` holds ``<version>.jsonl`` files (where the model's
    local servers write: ``$CHURN_HOME/inference_log`` for the default model). ``max_rows``
    caps one window.
    """

    log_dir: str = ""
    storage_url: str = ""
    s3: S3Credentials = S3Credentials()
    max_rows: int = 5000

    def window(self, version: str, spec: Spec) -> pd.DataFrame:
        """The newest ``max_rows`` requests ``version`` scored (an empty frame when none),
        with a column per feature of ``spec`` (``version``'s own spec) and the ids that join
        a prediction to its outcome: ``entity_id`` (None where the request carried none)
        and ``request_id``, beside ``probability``, ``model_version`` and ``ts``."""
        if self.storage_url:
            root = open_location(self.storage_url, self.s3.storage_options())
            return read_object_log(root, version, spec, self.max_rows)
        if not self.log_dir:
            raise ValueError(
                "InferenceLogResource needs log_dir (a folder of <version>.jsonl files) or "
                "storage_url; platform_resources() sets the model's"
            )
        return read_inference_log(Path(self.log_dir) / f"{version}.jsonl", spec, self.max_rows)
