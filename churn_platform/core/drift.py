"""Population stability index (PSI) against a reference profile saved with the model.

The profile is built once on the training rows and stored as JSON beside the model:

* numeric feature: 10 quantile bins whose inner edges are fixed on the training data
  (duplicate edges of discrete columns are dropped, so a column with 4 values gets at most
  5 bins); the outer bins are open to -inf and +inf. A value v falls in bin k when
  edges[k-1] <= v < edges[k].
* categorical feature (contract type, region, and is_enterprise): the share of every value
  seen in training, plus an ``__unseen__`` bin for values training never saw.
* every feature: an explicit ``__missing__`` bin, so a rise in nulls is drift too.

PSI = sum over bins of (q - p) * ln(q / p), p the reference share and q the current share.
Empty bins would make that infinite, so both share vectors are smoothed the same way
before the sum: share' = (share + epsilon) / (1 + epsilon * n_bins), epsilon = 1e-4 by
default (stored in the profile). With that smoothing a bin that is empty on one side and
holds 1% on the other contributes about 0.046.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn_platform.core import schema as s

PROFILE_FORMAT = "churn_platform.psi_reference_profile"
PROFILE_VERSION = 1
MISSING_BIN = "__missing__"
UNSEEN_BIN = "__unseen__"
DEFAULT_N_BINS = 10
DEFAULT_EPSILON = 1e-4
DEFAULT_CATEGORICAL: tuple[str, ...] = (*s.CATEGORICAL_FEATURES, s.IS_ENTERPRISE)


# ---------------------------------------------------------------------------------------
# column helpers shared by the profile and the PSI, so both bin the same way


def _numeric_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A float64 view of ``column``: nulls become NaN; non-numeric text is coerced to NaN."""
    series = frame[column]
    try:
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _numeric_counts(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts per bin (len(edges) + 1 bins) and the missing count.

    Counting ``values < edge`` per edge beats searchsorted + bincount for 10 bins: each
    edge is one vectorised compare-and-count pass, and NaN compares false everywhere.
    """
    n_missing = int(np.count_nonzero(np.isnan(values)))
    below = np.fromiter(
        (np.count_nonzero(values < e) for e in edges), dtype=np.int64, count=edges.size
    )
    cumulative = np.concatenate([[0], below, [values.size - n_missing]])
    return np.diff(cumulative), n_missing


def _categorical_counts(series: pd.Series, categories: list[Any]) -> tuple[np.ndarray, int, int]:
    """Counts per reference category, the unseen count and the missing count.

    No Python loop over rows: values are hashed once against the reference categories
    (``pd.Categorical``) and counted with ``np.bincount``. Unseen values and nulls both get
    code -1; they are told apart by ``isna`` on those few rows only (``isna`` on a whole
    object column costs as much as the encoding). Categorical and Arrow-backed columns take
    ``pd.factorize``, which is fast for them, and map their few uniques instead.
    """
    n_cats = len(categories)
    if series.dtype == bool and set(categories) <= {False, True}:
        n_true = int(np.count_nonzero(series.to_numpy()))
        counts = np.array([n_true if c else series.size - n_true for c in categories])
        return counts.astype(np.int64), series.size - int(counts.sum()), 0
    if isinstance(series.dtype, (pd.CategoricalDtype, pd.ArrowDtype)) or (
        getattr(series.dtype, "storage", None) == "pyarrow"
    ):
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        per_unique = np.bincount(codes + 1, minlength=len(uniques) + 1)
        target = pd.Index(categories, dtype=object).get_indexer(pd.Index(uniques, dtype=object))
        known = target >= 0
        counts = np.bincount(target[known], weights=per_unique[1:][known], minlength=n_cats)
        unseen = int(per_unique[1:][~known].sum())
        return counts.astype(np.int64), unseen, int(per_unique[0])
    codes = pd.Categorical(series, categories=categories).codes
    per_code = np.bincount(codes.astype(np.intp) + 1, minlength=n_cats + 1)
    not_coded = np.flatnonzero(codes < 0) if per_code[0] else np.empty(0, dtype=np.intp)
    n_missing = int(series.iloc[not_coded].isna().sum())
    return per_code[1:].astype(np.int64), int(per_code[0]) - n_missing, n_missing


def _to_json_value(value: Any) -> Any:
    """numpy scalars to plain Python (bool, int, float, str) for the JSON profile."""
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------
# reference profile


def build_reference_profile(
    frame: pd.DataFrame,
    numeric: Iterable[str] = s.NUMERIC_FEATURES,
    categorical: Iterable[str] = DEFAULT_CATEGORICAL,
    n_bins: int = DEFAULT_N_BINS,
    epsilon: float = DEFAULT_EPSILON,
) -> dict[str, Any]:
    """The reference profile of ``frame`` (training rows) as a JSON-serialisable dict.

    Keys: ``format``, ``version``, ``n_rows``, ``n_bins``, ``epsilon`` and ``features``;
    per feature ``kind`` ("numeric" or "categorical"), ``bins`` (labels), ``shares``
    (aligned with ``bins``, summing to 1), and ``edges`` (numeric) or ``categories``.
    """
    numeric, categorical = list(numeric), list(categorical)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if not 0.0 < epsilon < 0.01:
        raise ValueError(f"epsilon must be in (0, 0.01), got {epsilon}")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"features {sorted(overlap)} are listed as numeric and categorical")
    absent = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if absent:
        raise ValueError(f"frame lacks profile columns {absent}")
    n_rows = len(frame)
    if n_rows == 0:
        raise ValueError("frame has no rows; a reference profile needs training data")

    features: dict[str, dict[str, Any]] = {}
    probs = np.arange(1, n_bins) / n_bins
    for col in numeric:
        values = _numeric_values(frame, col)
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, probs)) if finite.size else np.empty(0)
        counts, n_missing = _numeric_counts(values, edges)
        labels = _numeric_labels(edges)
        features[col] = {
            "kind": "numeric",
            "edges": [float(e) for e in edges],
            "bins": [*labels, MISSING_BIN],
            "shares": [float(c) / n_rows for c in (*counts, n_missing)],
        }
    for col in categorical:
        series = frame[col]
        observed = pd.unique(series.dropna())
        categories = sorted((_to_json_value(v) for v in observed), key=lambda v: (str(type(v)), v))
        counts, unseen, n_missing = _categorical_counts(series, categories)
        features[col] = {
            "kind": "categorical",
            "categories": categories,
            "bins": [*(str(c) for c in categories), UNSEEN_BIN, MISSING_BIN],
            "shares": [float(c) / n_rows for c in (*counts, unseen, n_missing)],
        }
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "n_rows": n_rows,
        "n_bins": n_bins,
        "epsilon": float(epsilon),
        "features": features,
    }


def _numeric_labels(edges: np.ndarray) -> list[str]:
    bounds = [-math.inf, *edges.tolist(), math.inf]
    return [f"[{lo:g}, {hi:g})" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _check_profile(profile: Mapping[str, Any]) -> None:
    if not isinstance(profile, Mapping) or profile.get("format") != PROFILE_FORMAT:
        raise ValueError(
            f"reference_profile is not a {PROFILE_FORMAT!r} document "
            f"(format={profile.get('format') if isinstance(profile, Mapping) else None!r})"
        )
    if profile.get("version") != PROFILE_VERSION:
        raise ValueError(
            f"reference_profile version {profile.get('version')!r} is not supported; "
            f"this code reads version {PROFILE_VERSION}"
        )


# ---------------------------------------------------------------------------------------
# PSI


@dataclass(frozen=True)
class PsiResult:
    """PSI per feature of a current frame against a reference profile."""

    psi: dict[str, float]
    n_rows: int
    max_feature: str | None
    max_psi: float | None
    unseen_counts: dict[str, int]  # categorical features: values training never saw
    missing_counts: dict[str, int]
    skipped_reason: str | None = None  # why no PSI was computed (e.g. no rows)

    def drifted(self, threshold: float = 0.2) -> dict[str, float]:
        """Features whose PSI exceeds ``threshold``, highest first."""
        hits = {k: v for k, v in self.psi.items() if v > threshold}
        return dict(sorted(hits.items(), key=lambda kv: -kv[1]))


def psi_from_shares(
    reference: np.ndarray, current: np.ndarray, epsilon: float = DEFAULT_EPSILON
) -> float:
    """PSI of two share vectors over the same bins, both smoothed with ``epsilon``."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise ValueError(f"share vectors must be 1-D of equal length, got {ref.shape}, {cur.shape}")
    k = ref.size
    p = (ref + epsilon) / (1.0 + epsilon * k)
    q = (cur + epsilon) / (1.0 + epsilon * k)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference_profile: Mapping[str, Any], current_frame: pd.DataFrame) -> PsiResult:
    """PSI of every profiled feature of ``current_frame`` (see the module docstring).

    An empty frame gives ``n_rows=0``, an empty ``psi`` and a ``skipped_reason`` instead
    of an error, so a sensor can skip with that reason. A profiled column absent from a
    non-empty frame raises ``ValueError``.
    """
    _check_profile(reference_profile)
    features: Mapping[str, Mapping[str, Any]] = reference_profile["features"]
    epsilon = float(reference_profile.get("epsilon", DEFAULT_EPSILON))
    n_rows = len(current_frame)
    if n_rows == 0:
        return PsiResult({}, 0, None, None, {}, {}, "current frame has no rows")
    absent = [c for c in features if c not in current_frame.columns]
    if absent:
        raise ValueError(f"current_frame lacks profiled columns {absent}")

    values_psi: dict[str, float] = {}
    unseen_counts: dict[str, int] = {}
    missing_counts: dict[str, int] = {}
    for col, spec in features.items():
        if spec["kind"] == "numeric":
            counts, n_missing = _numeric_counts(
                _numeric_values(current_frame, col), np.asarray(spec["edges"], dtype=np.float64)
            )
            current = np.append(counts, n_missing)
        elif spec["kind"] == "categorical":
            counts, unseen, n_missing = _categorical_counts(current_frame[col], spec["categories"])
            current = np.concatenate([counts, [unseen, n_missing]])
            unseen_counts[col] = unseen
        else:
            raise ValueError(f"reference_profile feature {col!r} has unknown kind {spec['kind']!r}")
        missing_counts[col] = n_missing
        values_psi[col] = psi_from_shares(
            np.asarray(spec["shares"], dtype=np.float64), current / n_rows, epsilon
        )
    max_feature = max(values_psi, key=values_psi.__getitem__) if values_psi else None
    return PsiResult(
        psi=values_psi,
        n_rows=n_rows,
        max_feature=max_feature,
        max_psi=values_psi[max_feature] if max_feature is not None else None,
        unseen_counts=unseen_counts,
        missing_counts=missing_counts,
    )
