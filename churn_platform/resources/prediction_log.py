"""The served predictions of a week, from the model servers' inference logs.

A thin adapter over the inference-log readers (``serving.inference_log``): every version
with a production log (``<log_dir>/<version>.jsonl`` and its newest rotation, or the
Parquet batches under ``<storage_url>/inference_log/<version>/``) is read whole, up to
``max_rows`` per version, and reduced to the prediction columns ``core.performance``
joins (``entity_id``, ``request_id``, ``model_version``, ``ts``, ``probability``) plus the
version's features (the slices need them). Logs written before the servers recorded
``entity_id`` / ``request_id`` give null ids: their predictions are counted, never joined.
Older rotations than ``<log>.1`` are not read (they are the servers' overflow).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from churn_platform.core.performance import PREDICTION_COLUMNS
from churn_platform.core.spec import Spec
from churn_platform.resources.inference_log_reader import InferenceLogResource
from churn_platform.resources.s3_credentials import open_location
from churn_platform.serving.inference_log import LOG_PREFIX

#: Rows read per version at most (a week of one version's traffic).
DEFAULT_MAX_ROWS = 5_000_000


def logged_versions(log: InferenceLogResource) -> list[str]:
    """The versions with a production inference log (sorted)."""
    if log.storage_url:
        root = open_location(log.storage_url, log.s3.storage_options()) / LOG_PREFIX
        try:
            return sorted(p.name for p in root.iterdir() if p.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []
    folder = Path(log.log_dir) if log.log_dir else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name[: -len(".jsonl")] for p in folder.glob("*.jsonl"))


def week_predictions(
    log: InferenceLogResource,
    spec_of: Callable[[str], Spec],
    start: int,
    end: int,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> pd.DataFrame:
    """Every logged prediction with ``ts`` in [start, end) (Unix seconds), all versions.

    ``spec_of(version)`` is the version's own spec (its features are kept for the slices).
    """
    wide = InferenceLogResource(
        log_dir=log.log_dir, storage_url=log.storage_url, s3=log.s3, max_rows=max_rows
    )
    frames = []
    for version in logged_versions(log):
        spec = spec_of(version)
        frame = wide.window(version, spec)
        if frame.empty:
            continue
        ts = pd.to_numeric(frame.get("ts"), errors="coerce")
        frame = frame.loc[(ts >= start) & (ts < end)].copy()
        for col in ("entity_id", "request_id"):
            if col not in frame.columns:
                frame[col] = None
        frame["model_version"] = frame.get("model_version", version)
        frame["model_version"] = frame["model_version"].fillna(version).astype(str)
        keep = [*PREDICTION_COLUMNS, *(c for c in spec.feature_names if c in frame.columns)]
        frames.append(frame[keep])
    if not frames:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    return pd.concat(frames, ignore_index=True)
