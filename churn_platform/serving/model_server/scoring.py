"""Scoring without HTTP: checked column values, a loaded model and its schema in,
probabilities (or the error a client is answered with) out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn_platform.serving.model_server.schema import InputSchema, quote


def probabilities(
    predict_proba: Callable[[pd.DataFrame], np.ndarray],
    schema: InputSchema,
    values: Mapping[str, list[Any]],
) -> np.ndarray:
    """The churn probability of every row of ``values`` (checked by ``schema.check``)."""
    frame = schema.build(values)
    return np.asarray(predict_proba(frame)[:, 1], dtype=float)


@dataclass(frozen=True)
class Scored:
    """The outcome of scoring one request: ``scores``, or ``status`` and ``error``."""

    scores: np.ndarray | None
    status: int = 200
    error: str = ""


def scoring_failure(
    exc: Exception, values: Mapping[str, list[Any]], version: str, unseen: Sequence[str] = ()
) -> Scored:
    """What a failed ``predict_proba`` means for the client: missing values the model cannot
    impute, or values outside a field's allowed list that it cannot take (a pipeline whose
    encoder raises on unknown categories), are the caller's to fix (422); anything else is
    the server's failure (500)."""
    if unseen:
        return Scored(
            None,
            422,
            f"model version {version} cannot score values outside the allowed list of "
            f"{list(unseen)} ({type(exc).__name__}: {quote(str(exc))}); send an allowed value",
        )
    nulls = [name for name, col in values.items() if any(v is None for v in col)]
    if nulls:
        return Scored(
            None,
            422,
            f"model version {version} cannot score missing values in "
            f"{nulls} ({type(exc).__name__}: {quote(str(exc))}); send a value for each",
        )
    return Scored(None, 500, f"scoring failed: {type(exc).__name__}: {quote(str(exc))}")
