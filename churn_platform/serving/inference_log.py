"""Read the model servers' inference log (JSON lines) back as canonical rows for the drift sensor."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from churn_platform.core import schema as s
from churn_platform.serving.model_server import default_inference_log_path

_TAIL_BYTES_PER_ROW = 400


def read_inference_log(
    version: str, max_rows: int = 5000, path: Path | None = None
) -> pd.DataFrame:
    """The newest ``max_rows`` scored requests of ``version`` (an empty frame when there are none).

    Only the file's tail is read, so a sensor tick costs the same however long the log grew.
    A torn last line (a server mid-write) is ignored.
    """
    log = path or default_inference_log_path(version)
    if not log.exists() or log.stat().st_size == 0:
        return pd.DataFrame(columns=list(s.MODEL_INPUT_COLUMNS))
    with log.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - max_rows * _TAIL_BYTES_PER_ROW))
        chunk = f.read().decode("utf-8", errors="replace")
    lines = chunk.splitlines()
    if size > max_rows * _TAIL_BYTES_PER_ROW:
        lines = lines[1:]  # the first line may start mid-record
    rows = []
    for line in lines[-max_rows:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    frame = pd.DataFrame(rows)
    for col in s.MODEL_INPUT_COLUMNS:
        if col not in frame:
            frame[col] = None
    return frame
