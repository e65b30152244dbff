"""Evaluation slices: the spec's slices as row masks, and AUC per slice with its evidence.

A slice is judged only with enough evidence: at least ``MIN_SLICE_ROWS`` rows and
``MIN_SLICE_CLASS_ROWS`` of each class. The model check reads each slice's bootstrap
interval (``slice_aucs(..., interval=...)``), the promotion gate each slice's paired
interval of the challenger-minus-champion delta (``paired_slice_deltas``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from churn_platform.core import schema as s
from churn_platform.core.metrics import (
    _as_binary_labels,
    _as_scores,
    auc,
    bootstrap_auc_ci,
    paired_bootstrap_auc_delta,
)
from churn_platform.core.spec import Spec, slice_values

# A slice smaller than this gets no AUC (too noisy to judge); one default for checks and gate.
MIN_SLICE_ROWS = 30
# A slice with fewer churners or fewer non-churners than this is "not enough evidence": its
# AUC rests on so few of one class that no interval of it can be trusted, so it is reported
# and never failed (benchmarks/results/simulate_slices.md measures the rule at this size).
MIN_SLICE_CLASS_ROWS = 10


@dataclass(frozen=True)
class SliceResult:
    """AUC on one slice of the evaluation rows (with its bootstrap interval when one was
    asked for), or why it was not computed."""

    name: str
    n: int
    n_pos: int
    auc: float | None
    skipped_reason: str | None = None
    lower: float | None = None  # bootstrap interval of the slice AUC (None: not computed)
    upper: float | None = None


@dataclass(frozen=True)
class SliceDelta:
    """Challenger minus champion AUC on one slice, with its paired bootstrap interval, or
    why it was not computed (``delta`` None)."""

    name: str
    n: int
    n_pos: int
    delta: float | None
    lower: float | None = None
    upper: float | None = None
    skipped_reason: str | None = None


def _labels_and_scores(
    frame_or_arrays: pd.DataFrame | tuple[ArrayLike, ArrayLike], score_column: str, target: str
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores from a frame's columns or a ``(y_true, scores)`` pair, validated."""
    if isinstance(frame_or_arrays, pd.DataFrame):
        for col in (target, score_column):
            if col not in frame_or_arrays.columns:
                raise ValueError(
                    f"frame_or_arrays has no column {col!r}; columns: "
                    f"{list(frame_or_arrays.columns)}"
                )
        y_raw, score_raw = frame_or_arrays[target], frame_or_arrays[score_column]
    else:
        if len(frame_or_arrays) != 2:
            raise ValueError("frame_or_arrays must be a DataFrame or a (y_true, scores) pair")
        y_raw, score_raw = frame_or_arrays
    y = _as_binary_labels(y_raw)
    return y, _as_scores(score_raw, y.size, "scores")


def _judged_slices(
    y: np.ndarray, slices: Mapping[str, ArrayLike], min_rows: int, min_per_class: int
) -> list[tuple[str, np.ndarray, int, int, str | None]]:
    """Per slice: name, mask, rows, churners and why it gets no AUC (None: it gets one).

    Fewer than ``min_rows`` rows, one class, or fewer than ``min_per_class`` rows of a
    class ("not enough evidence") leave a slice without an AUC.
    """
    for name, value in (("min_rows", min_rows), ("min_per_class", min_per_class)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    out = []
    for name, mask_like in slices.items():
        mask = np.asarray(mask_like)
        if mask.dtype != bool or mask.shape != y.shape:
            raise ValueError(
                f"slice {name!r} must be a boolean mask of length {y.size}, "
                f"got dtype {mask.dtype} and shape {mask.shape}"
            )
        n, n_pos = int(mask.sum()), int(y[mask].sum())
        reason = None
        if n < min_rows:
            reason = f"fewer than {min_rows} rows"
        elif n_pos in (0, n):
            reason = "only one class"
        elif min(n_pos, n - n_pos) < min_per_class:
            reason = (
                f"not enough evidence: {n_pos} churners and {n - n_pos} non-churners "
                f"(needs {min_per_class} of each)"
            )
        out.append((name, mask, n, n_pos, reason))
    return out


def slice_aucs(
    frame_or_arrays: pd.DataFrame | tuple[ArrayLike, ArrayLike],
    slices: Mapping[str, ArrayLike],
    min_rows: int = MIN_SLICE_ROWS,
    score_column: str = "score",
    target_column: str = s.TARGET,
    min_per_class: int = MIN_SLICE_CLASS_ROWS,
    interval: tuple[int, float, int] | None = None,
) -> list[SliceResult]:
    """AUC per slice (a boolean row mask per name), in the order of ``slices``.

    ``frame_or_arrays`` is either ``(y_true, scores)`` or a frame with ``target_column``
    and ``score_column``. A slice with fewer than ``min_rows`` rows is skipped with reason
    "fewer than {min_rows} rows"; one with a single class with "only one class"; one with
    fewer than ``min_per_class`` churners or non-churners with "not enough evidence: ...".
    ``interval`` = (n_resamples, level, seed) adds each slice's bootstrap percentile
    interval (``bootstrap_auc_ci`` on the slice's rows) as ``lower`` / ``upper``.
    """
    y, x = _labels_and_scores(frame_or_arrays, score_column, target_column)
    results = []
    for name, mask, n, n_pos, reason in _judged_slices(y, slices, min_rows, min_per_class):
        if reason is not None:
            results.append(SliceResult(name, n, n_pos, None, reason))
        elif interval is None:
            results.append(SliceResult(name, n, n_pos, auc(y[mask], x[mask])))
        else:
            n_resamples, level, seed = interval
            ci = bootstrap_auc_ci(y[mask], x[mask], n_resamples, level, seed)
            results.append(SliceResult(name, n, n_pos, ci.point, None, ci.lower, ci.upper))
    return results


def paired_slice_deltas(
    y_true: ArrayLike,
    scores_challenger: ArrayLike,
    scores_champion: ArrayLike,
    slices: Mapping[str, ArrayLike],
    interval: tuple[int, float, int],
    min_rows: int = MIN_SLICE_ROWS,
    min_per_class: int = MIN_SLICE_CLASS_ROWS,
) -> list[SliceDelta]:
    """Challenger minus champion AUC per slice with its paired bootstrap interval
    (``paired_bootstrap_auc_delta`` on the slice's rows; ``interval`` = (n_resamples,
    level, seed)), in the order of ``slices``; slices are skipped as in ``slice_aucs``."""
    y = _as_binary_labels(y_true)
    new = _as_scores(scores_challenger, y.size, "scores_challenger")
    old = _as_scores(scores_champion, y.size, "scores_champion")
    n_resamples, level, seed = interval
    out = []
    for name, mask, n, n_pos, reason in _judged_slices(y, slices, min_rows, min_per_class):
        if reason is not None:
            out.append(SliceDelta(name, n, n_pos, None, skipped_reason=reason))
            continue
        cmp = paired_bootstrap_auc_delta(y[mask], new[mask], old[mask], n_resamples, level, seed)
        out.append(SliceDelta(name, n, n_pos, cmp.delta, cmp.delta_lower, cmp.delta_upper))
    return out


TENURE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("tenure:0-12m", 0.0, 12.0),
    ("tenure:12-24m", 12.0, 24.0),
    ("tenure:24m+", 24.0, math.inf),
)
"""The shipped spec's tenure bands (``slices`` in ``specs/churn.yaml`` is where they live)."""


def _boolean_mask(values: pd.Series, wanted: object) -> np.ndarray:
    flag = str(wanted).strip().lower() == "true"
    as_bool = values.astype("boolean")
    return (as_bool == flag).fillna(False).to_numpy(dtype=bool)


def _value_mask(values: pd.Series, kind: str, wanted: object) -> np.ndarray:
    if kind == "boolean":
        return _boolean_mask(values, wanted)
    if kind in ("numeric", "integer", "cyclical"):
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return numbers == float(str(wanted))
    return (values.astype("string") == str(wanted)).fillna(False).to_numpy(dtype=bool)


def default_slices(frame: pd.DataFrame, spec: Spec) -> dict[str, np.ndarray]:
    """The spec's evaluation slices of a validated frame, as boolean masks named
    ``spec.slice_names()``.

    ``equals`` gives one slice (rows where the column equals the value), ``values`` one per
    value (``name:value``), ``bands`` one per band (``name:label``, low inclusive, high
    exclusive, null an open side). For the shipped spec: "enterprise" (is_enterprise true),
    "contract:<type>" per contract type, and tenure bands "tenure:0-12m" [0, 12),
    "tenure:12-24m" [12, 24), "tenure:24m+" [24, inf). Rows with a missing value fall in
    no slice of that column.
    """
    wanted = list(dict.fromkeys(sl.column for sl in spec.slices))
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ValueError(
            f"frame lacks slice columns {missing} (the spec's 'slices'); it has {list(frame.columns)}"
        )
    out: dict[str, np.ndarray] = {}
    for sl in spec.slices:
        kind = spec.features[sl.column].kind
        values = frame[sl.column]
        if sl.equals is not None:
            out[sl.name] = _value_mask(values, kind, sl.equals)
        elif sl.bands is not None:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                for label, (low, high) in sl.bands.items():
                    lo = -math.inf if low is None else float(low)
                    hi = math.inf if high is None else float(high)
                    out[f"{sl.name}:{label}"] = (numbers >= lo) & (numbers < hi)
        else:
            for value in slice_values(spec, sl):
                out[f"{sl.name}:{value}"] = _value_mask(values, kind, value)
    return out
