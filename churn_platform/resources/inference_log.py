"""The model servers' inference logs as a resource: the drift sensor's window of served requests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from churn_platform.serving.inference_log import read_inference_log


class InferenceLogResource(dg.ConfigurableResource):
    """Reads the newest scored requests of a model version.

    ``log_dir`` empty means where the servers write by default (``CHURN_INFERENCE_LOG`` or
    ``$CHURN_HOME/inference_log/<version>.jsonl``); ``max_rows`` caps one window.
    """

    log_dir: str = ""
    max_rows: int = 5000

    def window(self, version: str) -> pd.DataFrame:
        """The newest ``max_rows`` requests ``version`` scored (an empty frame when none)."""
        path = Path(self.log_dir) / f"{version}.jsonl" if self.log_dir else None
        return read_inference_log(version, self.max_rows, path)
