"""Markdown rendering shared by the reports and the check evidence (pure, no I/O)."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

__all__ = ["markdown_table"]


def _cell(value: Any) -> str:
    """One markdown table cell: text with pipes escaped and no line breaks."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = ""
    elif value is pd.NA or value is pd.NaT:
        text = "<NA>"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (no index)."""
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *rows])
