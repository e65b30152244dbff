"""Small helpers shared by the asset modules: check results, markdown, state files, git."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core.markdown import markdown_table
from churn_platform.core.model_checks import CheckOutcome

GROUP = "churn"
OWNERS = ["team:ml-platform"]


def md_table(frame: pd.DataFrame | None, max_rows: int = 20) -> str:
    """A markdown table of at most ``max_rows`` rows (empty string for nothing)."""
    if frame is None or frame.empty:
        return ""
    table = markdown_table(frame.head(max_rows))
    more = len(frame) - max_rows
    return table + (f"\n\n_{more} more rows not shown_" if more > 0 else "")


def metadata_value(value: Any) -> Any:
    """A plain value as Dagster metadata (None becomes the text 'n/a')."""
    if value is None:
        return "n/a"
    if isinstance(value, float | int | str | bool):
        return value
    return str(value)


def check_result(
    outcome: CheckOutcome,
    asset_key: str,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """A core ``CheckOutcome`` as a Dagster check result with its evidence in metadata."""
    metadata: dict[str, Any] = {k: metadata_value(v) for k, v in outcome.metadata.items()}
    metadata["summary"] = outcome.description
    if outcome.table is not None and not outcome.table.empty:
        metadata["evidence"] = dg.MetadataValue.md(md_table(outcome.table))
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=severity,
        metadata=metadata,
        description=outcome.description,
    )


def failed_names(outcomes: Iterable[CheckOutcome]) -> list[str]:
    """Names of the outcomes that did not pass."""
    return [o.name for o in outcomes if not o.passed]


def git_commit(cwd: Path | None = None) -> str:
    """The checked-out commit (``GIT_COMMIT`` in images without a .git folder), or 'unknown'."""
    import os

    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def upstream_metadata(context: dg.AssetExecutionContext, asset: str, key: str) -> str | None:
    """A metadata entry of ``asset``'s latest materialization (None when there is none)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    entry = event.asset_materialization.metadata.get(key)
    return str(entry.value) if entry is not None else None
