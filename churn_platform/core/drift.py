"""Population stability index (PSI) against a reference profile saved with the model.

The profile is built once on the training rows and stored as JSON beside the model. Which
columns it watches, and how each is binned, follow the spec (``spec.drift_features()``):

* numeric, integer and cyclical features (and dates, as days since 1970) with more than
  ``n_bins`` distinct values: 10 quantile bins whose inner edges are fixed on the training
  data, between the training minimum and maximum, plus a "below min" bin and an "above max"
  bin of their own. A value v falls in bin k when edges[k-1] <= v < edges[k]; v < min is
  below, v > max is above. So a column that later leaves its training range is drift even
  when the training column was constant. A value holding so many rows that several
  quantiles fall on it (``points``, e.g. the zero of a mostly-zero column) is a bin [p, p]
  of its own, followed by (p, next edge).
* low-cardinality numeric features (at most ``n_bins`` distinct training values, e.g. a 0/1/2
  count or a column that was all zeros): one bin per training value plus an ``__other__``
  bin for any value training never had.
* categorical and boolean features: the share of every value seen in training, plus an
  ``__unseen__`` bin for values training never saw.
* every feature: an explicit ``__missing__`` bin, so a rise in nulls is drift too.

Profiles stored before the below/above bins existed (numeric entries without ``min`` and
``max``, whose outer bins are open to -inf and +inf) are still read and scored as before.

PSI = sum over bins of (q - p) * ln(q / p), p the reference share and q the current share.
Empty bins would make that infinite, so both share vectors are smoothed the same way
before the sum: share' = (share + epsilon) / (1 + epsilon * n_bins), epsilon = 1e-4 by
default (stored in the profile). With that smoothing a bin that is empty on one side and
holds 1% on the other contributes about 0.046.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn_platform.core.spec import NUMERIC_KINDS, Spec

PROFILE_FORMAT = "churn_platform.psi_reference_profile"
PROFILE_VERSION = 1
MISSING_BIN = "__missing__"
UNSEEN_BIN = "__unseen__"
OTHER_BIN = "__other__"
BELOW_BIN = "__below_min__"
ABOVE_BIN = "__above_max__"
DEFAULT_N_BINS = 10
DEFAULT_EPSILON = 1e-4
_NS_PER_DAY = 86_400e9


def profile_columns(spec: Spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(numeric, categorical) drift features of ``spec``: numeric, integer, cyclical and
    date kinds are binned numerically; categorical then boolean kinds by category."""
    watched = spec.drift_features()
    kinds = {name: spec.features[name].kind for name in watched}
    numeric = tuple(n for n in watched if kinds[n] in NUMERIC_KINDS or kinds[n] == "date")
    categorical = tuple(n for n in watched if kinds[n] == "categorical")
    boolean = tuple(n for n in watched if kinds[n] == "boolean")
    return numeric, (*categorical, *boolean)


# ---------------------------------------------------------------------------------------
# column helpers shared by the profile and the PSI, so both bin the same way


def _numeric_values(frame: pd.DataFrame, column: str, dates: bool = False) -> np.ndarray:
    """A float64 view of ``column``: nulls become NaN; non-numeric text is coerced to NaN;
    dates (a datetime column, or any column when ``dates``: ISO text from a request log)
    become days since 1970."""
    series = frame[column]
    if dates and not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series, errors="coerce", utc=True).dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = series.to_numpy(dtype="datetime64[ns]")
        days = stamps.astype(np.int64).astype(np.float64) / _NS_PER_DAY
        days[np.isnat(stamps)] = np.nan
        return days
    try:
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _numeric_counts(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts per bin (len(edges) + 1 bins, the outer ones open) and the missing count.

    Counting ``values < edge`` per edge beats searchsorted + bincount for 10 bins: each
    edge is one vectorised compare-and-count pass, and NaN compares false everywhere.
    """
    n_missing = int(np.count_nonzero(np.isnan(values)))
    below = np.fromiter(
        (np.count_nonzero(values < e) for e in edges), dtype=np.int64, count=edges.size
    )
    cumulative = np.concatenate([[0], below, [values.size - n_missing]])
    return np.diff(cumulative), n_missing


def _boundaries(
    low: float, edges: np.ndarray, points: Iterable[float], high: float
) -> list[tuple[float, bool]]:
    """The inner boundaries of the bounded layout as (value, inclusive), in order.

    A value v is left of boundary (b, False) when v < b and left of (b, True) when v <= b.
    The bins: below ``low``; [low, e1), [e1, e2), ...; a point edge p gets [p, p] and then
    (p, next) instead of [p, next); up to ``high`` inclusive; above ``high``.
    """
    marked = set(points)
    out: list[tuple[float, bool]] = [(low, False)]
    for edge in edges.tolist():
        out.append((edge, False))
        if edge in marked:
            out.append((edge, True))
    out.append((high, True))
    return out


def _bounded_counts(
    values: np.ndarray, boundaries: list[tuple[float, bool]]
) -> tuple[np.ndarray, int]:
    """Counts per bin of the bounded layout (see ``_boundaries``) and the missing count."""
    n_missing = int(np.count_nonzero(np.isnan(values)))
    left_of = np.fromiter(
        (np.count_nonzero(values <= b if inclusive else values < b) for b, inclusive in boundaries),
        dtype=np.int64,
        count=len(boundaries),
    )
    cumulative = np.concatenate([[0], left_of, [values.size - n_missing]])
    return np.diff(cumulative), n_missing


def _bounded_labels(boundaries: list[tuple[float, bool]]) -> list[str]:
    labels = [BELOW_BIN]
    for (lo, lo_incl), (hi, hi_incl) in zip(boundaries[:-1], boundaries[1:], strict=True):
        labels.append(f"{'(' if lo_incl else '['}{lo:g}, {hi:g}{']' if hi_incl else ')'}")
    return [*labels, ABOVE_BIN]


def _discrete_counts(values: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Counts per training value, the count of any other value, and the missing count."""
    n_missing = int(np.count_nonzero(np.isnan(values)))
    counts = np.fromiter(
        (np.count_nonzero(values == v) for v in levels), dtype=np.int64, count=levels.size
    )
    return counts, values.size - n_missing - int(counts.sum()), n_missing


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
    spec: Spec,
    *,
    numeric: Iterable[str] | None = None,
    categorical: Iterable[str] | None = None,
    n_bins: int = DEFAULT_N_BINS,
    epsilon: float = DEFAULT_EPSILON,
) -> dict[str, Any]:
    """The reference profile of ``frame`` (training rows) as a JSON-serialisable dict.

    Profiles every drift feature of ``spec``, binned by kind (see the module docstring);
    ``numeric`` / ``categorical`` name the columns explicitly instead. Keys: ``format``,
    ``version``, ``n_rows``, ``n_bins``, ``epsilon``, ``spec_hash`` and ``features``; per
    feature ``kind`` ("numeric", "discrete" or "categorical"), ``bins`` (labels), ``shares``
    (aligned with ``bins``, summing to 1), and ``edges``/``min``/``max`` (numeric),
    ``values`` (discrete) or ``categories``.
    """
    spec_numeric, spec_categorical = profile_columns(spec)
    numeric = list(spec_numeric if numeric is None else numeric)
    categorical = list(spec_categorical if categorical is None else categorical)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if not 0.0 < epsilon < 0.01:
        raise ValueError(f"epsilon must be in (0, 0.01), got {epsilon}")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"features {sorted(overlap)} are listed as numeric and categorical")
    absent = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if absent:
        raise ValueError(
            f"frame lacks profile columns {absent}; the spec's drift features are "
            f"{list(spec.drift_features())} (set drift: false on a feature to stop watching it)"
        )
    n_rows = len(frame)
    if n_rows == 0:
        raise ValueError("frame has no rows; a reference profile needs training data")

    features: dict[str, dict[str, Any]] = {}
    for col in numeric:
        dates = pd.api.types.is_datetime64_any_dtype(frame[col].dtype) or (
            col in spec.features and spec.features[col].kind == "date"
        )
        features[col] = _numeric_profile(_numeric_values(frame, col, dates), n_bins)
        if dates:
            features[col]["dates"] = True  # values are days since 1970
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
        "spec_hash": spec.short_hash,
        "features": features,
    }


def _numeric_profile(values: np.ndarray, n_bins: int) -> dict[str, Any]:
    """One numeric column's profile: by value when it has at most ``n_bins`` distinct
    finite values, else quantile bins between its minimum and maximum."""
    n_rows = values.size
    finite = values[np.isfinite(values)]
    levels = np.unique(finite)
    if levels.size <= n_bins:
        counts, other, n_missing = _discrete_counts(values, levels)
        return {
            "kind": "discrete",
            "values": [float(v) for v in levels],
            "bins": [*(f"{v:g}" for v in levels), OTHER_BIN, MISSING_BIN],
            "shares": [float(c) / n_rows for c in (*counts, other, n_missing)],
        }
    low, high = float(levels[0]), float(levels[-1])
    probs = np.arange(1, n_bins) / n_bins
    # a value that several quantiles land on holds >= 1/n_bins of the rows by itself (a
    # near-constant column's zero): it gets a bin of its own, so a change of the rest shows
    edges, hits = np.unique(np.quantile(finite, probs), return_counts=True)
    points = [float(e) for e in edges[hits > 1]]
    boundaries = _boundaries(low, edges, points, high)
    counts, n_missing = _bounded_counts(values, boundaries)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "points": points,
        "min": low,
        "max": high,
        "bins": [*_bounded_labels(boundaries), MISSING_BIN],
        "shares": [float(c) / n_rows for c in (*counts, n_missing)],
    }


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
    # categorical and discrete features: rows with values training never saw
    unseen_counts: dict[str, int]
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
            values = _numeric_values(current_frame, col, bool(spec.get("dates")))
            edges = np.asarray(spec["edges"], dtype=np.float64)
            if spec.get("min") is None or spec.get("max") is None:
                # a profile stored before the below/above bins: outer bins open
                counts, n_missing = _numeric_counts(values, edges)
            else:
                bounds = _boundaries(
                    float(spec["min"]), edges, spec.get("points") or (), float(spec["max"])
                )
                counts, n_missing = _bounded_counts(values, bounds)
            current = np.append(counts, n_missing)
        elif spec["kind"] == "discrete":
            levels = np.asarray(spec["values"], dtype=np.float64)
            counts, other, n_missing = _discrete_counts(
                _numeric_values(current_frame, col, bool(spec.get("dates"))), levels
            )
            current = np.concatenate([counts, [other, n_missing]])
            unseen_counts[col] = other
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
