"""After release: every served prediction joined to what the customer did, per model version.

The join (``join_outcomes``), decided and documented here:

* **One prediction per customer, version and week.** A customer scored many times in a
  prediction week by one version counts once for that version: its *latest* prediction of
  the week (the one the retention team would have acted on last). A customer scored by two
  versions (a canary) counts once for each. Predictions without an ``entity_id`` cannot be
  joined; they are counted (``n_without_id``) and left out.
* **The outcome of a prediction** is the customer's first outcome known at or after the
  prediction's time and at most ``label_delay_days`` after it. A prediction with no such
  outcome is *unmatched*: it counts against the match rate and in no metric.
* **Maturity.** A week of predictions is mature when its last possible prediction's window
  has closed: ``now >= week start + 7 days + label_delay_days``. An immature week is
  *pending*: it gets no realized metric (only the CBPE estimate, ``core/cbpe.py``).

Everything is vectorised: entity ids are factorised once for predictions and outcomes
together, the de-duplication is one ``argsort`` of a packed int64 key and the join one
``searchsorted`` of (entity, time) keys, so 10M predictions and 10M outcomes are joined in
seconds (``benchmarks/bench_performance.py``).

Metrics per version (``version_metrics``): rows and match rate, churners, AUC (exactly
``sklearn.metrics.roc_auc_score``) with a Poisson-bootstrap interval (``core/metrics.py``;
above ``bootstrap_max_rows`` the DeLong normal interval, which needs one sort), Brier score,
expected calibration error with its reliability bins, precision and recall in the top 10%
(the retention list) and AUC per slice of the version's spec (``core/slices.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from churn_platform.core.metrics import bootstrap_auc_ci
from churn_platform.core.slices import SliceResult, default_slices, slice_aucs
from churn_platform.core.spec import Spec

PREDICTION_COLUMNS: tuple[str, ...] = (
    "entity_id",
    "request_id",
    "model_version",
    "ts",
    "probability",
)
OUTCOME_COLUMNS: tuple[str, ...] = ("entity_id", "outcome", "known_ts")
SECONDS_PER_DAY = 86_400
WEEK_SECONDS = 7 * SECONDS_PER_DAY
DEFAULT_LABEL_DELAY_DAYS = 30
RELIABILITY_BINS = 10
TOP_SHARE = 0.10  # the retention list: the top 10% by probability


@dataclass(frozen=True)
class PerformanceSettings:
    """How realized performance is computed and judged (defaults: README settings table)."""

    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS
    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    bootstrap_max_rows: int = 200_000  # above: the DeLong normal interval (one sort)
    auc_tolerance: float = 0.02  # realized check: fail when upper < holdout AUC - tolerance
    max_calibration_error: float = 0.05
    min_match_rate: float = 0.8

    def __post_init__(self) -> None:
        if isinstance(self.label_delay_days, bool) or self.label_delay_days < 0:
            raise ValueError(
                f"label_delay_days must be a whole number of days >= 0, got {self.label_delay_days!r}"
            )
        for name in ("auc_tolerance", "max_calibration_error"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.min_match_rate <= 1.0:
            raise ValueError(f"min_match_rate must be in [0, 1], got {self.min_match_rate!r}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level!r}")


# ---------------------------------------------------------------------------------------
# inputs


def _unix_seconds(values: pd.Series, name: str) -> np.ndarray:
    """A time column as int64 Unix seconds: numbers are seconds, datetimes are converted."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        if stamps.isna().any():
            raise ValueError(f"{name} has {int(stamps.isna().sum())} missing times")
        return (stamps.astype("int64") // 1_000_000_000).to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        bad = values[numbers.isna()].head(3).tolist()
        raise ValueError(
            f"{name} must be Unix seconds or datetimes without gaps; bad values: {bad}"
        )
    return np.floor(numbers.to_numpy(dtype=np.float64)).astype(np.int64)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it has {list(frame.columns)}")


def predictions_from_log(frame: pd.DataFrame) -> pd.DataFrame:
    """The predictions frame of an inference-log reader's frame: its id, version, time and
    probability columns (``entity_id`` may be null), plus any feature columns it carries."""
    _require(frame, PREDICTION_COLUMNS, "the inference log")
    return frame.reset_index(drop=True)


def outcomes_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Validated outcomes: ``entity_id`` (string), ``outcome`` (0/1), ``known_ts`` (Unix s).

    ``known_ts`` may be given as datetimes; ``outcome`` must already be mapped to 0/1 (the
    spec's target values are mapped by the outcome source).
    """
    _require(frame, OUTCOME_COLUMNS, "the outcomes")
    if frame["entity_id"].isna().any():
        raise ValueError(
            f"outcomes column 'entity_id' has {int(frame['entity_id'].isna().sum())} nulls"
        )
    outcome = pd.to_numeric(frame["outcome"], errors="coerce")
    bad = ~outcome.isin((0, 1))
    if bad.any():
        raise ValueError(
            f"outcomes column 'outcome' must hold 0/1 (map the target's values), got "
            f"{frame['outcome'][bad].drop_duplicates().head(5).tolist()}"
        )
    return pd.DataFrame(
        {
            "entity_id": _as_text_or_null(frame["entity_id"]).reset_index(drop=True),
            "outcome": outcome.to_numpy(dtype=np.int8),
            "known_ts": _unix_seconds(frame["known_ts"], "outcomes column 'known_ts'"),
        }
    )


# ---------------------------------------------------------------------------------------
# weeks and maturity


def week_bounds(week_start: str | pd.Timestamp) -> tuple[int, int]:
    """[start, end) of the prediction week starting on ``week_start`` (UTC), Unix seconds."""
    day = pd.Timestamp(week_start)
    day = day.tz_localize("UTC") if day.tzinfo is None else day.tz_convert("UTC")
    start = int(day.normalize().timestamp())
    return start, start + WEEK_SECONDS


def matures_at(week_start: str | pd.Timestamp, label_delay_days: int) -> int:
    """When every outcome of the week's predictions is final (Unix s): end + delay."""
    return week_bounds(week_start)[1] + int(label_delay_days) * SECONDS_PER_DAY


def is_mature(week_start: str | pd.Timestamp, now_ts: float, label_delay_days: int) -> bool:
    """Whether the week's outcomes are final at ``now_ts`` (see ``matures_at``)."""
    return float(now_ts) >= matures_at(week_start, label_delay_days)


# ---------------------------------------------------------------------------------------
# the join


@dataclass(frozen=True)
class Joined:
    """The week's predictions, one per (version, customer), with their outcomes."""

    rows: pd.DataFrame  # predictions columns + "outcome" (0/1, -1 unmatched), "matched"
    n_logged: int  # predictions of the week, before de-duplication
    n_without_id: int  # of those, without an entity id (never joinable)


def _is_arrow_text(values: pd.Series) -> bool:
    dtype = values.dtype
    return (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow") or (
        isinstance(dtype, pd.ArrowDtype) and "string" in str(dtype)
    )


def _codes(*columns: pd.Series) -> list[np.ndarray]:
    """One integer code per distinct text across ``columns`` (int64, -1 for null), one array
    per column. Arrow strings are encoded by Arrow (no Python objects); others by pandas."""
    if all(_is_arrow_text(c) for c in columns):
        import pyarrow as pa

        chunks = [
            chunk.cast(pa.large_string())
            for c in columns
            for chunk in c.array.__arrow_array__().chunks
        ]
        encoded = pa.chunked_array(chunks, type=pa.large_string()).dictionary_encode()
        indices = pa.chunked_array([ch.indices for ch in encoded.chunks]).combine_chunks()
        codes = indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        joined = (
            np.concatenate([c.to_numpy(dtype=object, na_value=None) for c in columns])
            if len(columns) > 1
            else columns[0].to_numpy(dtype=object, na_value=None)
        )
        as_text = pd.Series(joined, dtype=object)
        as_text = as_text.where(as_text.isna(), as_text.astype(str))
        codes = pd.factorize(as_text, sort=False)[0].astype(np.int64)
    out, at = [], 0
    for c in columns:
        out.append(codes[at : at + len(c)])
        at += len(c)
    return out


def _latest(
    predictions: pd.DataFrame, entity: np.ndarray, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Positions (sorted) of the latest prediction per version and customer in [start, end),
    their Unix times, the predictions logged in the week and those without an id."""
    _require(predictions, PREDICTION_COLUMNS, "the predictions")
    ts = _unix_seconds(predictions["ts"], "predictions column 'ts'")
    in_week = (ts >= start) & (ts < end)
    has_id = entity >= 0
    n_logged, n_without_id = int(in_week.sum()), int((in_week & ~has_id).sum())
    idx = np.flatnonzero(in_week & has_id)
    ent = entity[idx]
    (ver,) = _codes(_as_text_or_null(predictions["model_version"].iloc[idx]))
    ver = np.where(ver < 0, int(ver.max(initial=0)) + 1, ver)  # a null version: its own
    n_ent = max(int(ent.max(initial=-1)) + 1, 1)
    group = ver * n_ent + ent
    # pack (version, entity, time within the week) so one argsort orders them all
    key = group * (WEEK_SECONDS + 1) + (ts[idx] - start)
    order = np.argsort(key, kind="stable")  # stable: equal times keep log order
    grouped = group[order]
    last = np.ones(order.size, dtype=bool)
    last[:-1] = grouped[1:] != grouped[:-1]
    keep = idx[np.sort(order[last])]
    return keep, ts[keep], n_logged, n_without_id


def _rows(predictions: pd.DataFrame, keep: np.ndarray, ts: np.ndarray) -> pd.DataFrame:
    rows = predictions.iloc[keep].reset_index(drop=True)
    rows["ts"] = ts
    return rows


def latest_per_entity(predictions: pd.DataFrame, start: int, end: int) -> Joined:
    """The predictions with ``ts`` in [start, end), reduced to the latest per version and
    customer (ties on time: the later row). Rows without ``entity_id`` are dropped, counted."""
    _require(predictions, PREDICTION_COLUMNS, "the predictions")
    (entity,) = _codes(predictions["entity_id"])
    keep, ts, n_logged, n_without_id = _latest(predictions, entity, start, end)
    return Joined(_rows(predictions, keep, ts), n_logged, n_without_id)


def join_outcomes(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    week_start: str | pd.Timestamp,
    label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS,
) -> Joined:
    """The week's latest prediction per version and customer with its outcome: the first
    outcome of the customer known in [ts, ts + label_delay_days] (``outcome`` -1 and
    ``matched`` False when there is none). See the module docstring for the rules."""
    start, end = week_bounds(week_start)
    _require(predictions, PREDICTION_COLUMNS, "the predictions")
    out = outcomes_frame(outcomes)
    entity, out_ent = _codes(_as_text_or_null(predictions["entity_id"]), out["entity_id"])
    keep, pred_ts, n_logged, n_without_id = _latest(predictions, entity, start, end)
    pred_ent = entity[keep]
    out_ts = out["known_ts"].to_numpy(dtype=np.int64)
    outcome = _first_outcome(
        pred_ent, pred_ts, out_ent, out_ts, out["outcome"].to_numpy(), label_delay_days
    )
    rows = _rows(predictions, keep, pred_ts).assign(outcome=outcome, matched=outcome >= 0)
    return Joined(rows, n_logged, n_without_id)


def _as_text_or_null(values: pd.Series) -> pd.Series:
    """Ids as text, nulls kept (Arrow strings untouched)."""
    if _is_arrow_text(values):
        return values
    return values.astype("string[pyarrow]")


def _first_outcome(
    pred_ent: np.ndarray,
    pred_ts: np.ndarray,
    out_ent: np.ndarray,
    out_ts: np.ndarray,
    out_value: np.ndarray,
    label_delay_days: int,
) -> np.ndarray:
    """Per prediction, the outcome (0/1) of its entity's first outcome known in
    [ts, ts + delay], or -1: one ``searchsorted`` of packed (entity, time) keys."""
    if out_ent.size == 0:
        return np.full(pred_ent.size, -1, dtype=np.int8)
    t0 = min(int(pred_ts.min(initial=0)), int(out_ts.min(initial=0)))
    span = 2**32
    if max(int(pred_ts.max(initial=0)), int(out_ts.max(initial=0))) - t0 >= span:
        raise ValueError("prediction and outcome times span more than 136 years; check their units")
    out_key = out_ent * span + (out_ts - t0)
    order = np.argsort(out_key, kind="stable")
    sorted_key = out_key[order]
    pos = np.searchsorted(sorted_key, pred_ent * span + (pred_ts - t0), side="left")
    found = pos < sorted_key.size
    hit = order[np.minimum(pos, sorted_key.size - 1)]
    delay = int(label_delay_days) * SECONDS_PER_DAY
    found &= (out_ent[hit] == pred_ent) & (out_ts[hit] - pred_ts <= delay)
    return np.where(found, out_value[hit], -1).astype(np.int8)


# ---------------------------------------------------------------------------------------
# metrics


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of the reliability diagram: predicted vs observed churn rate."""

    low: float
    high: float
    n: int
    mean_probability: float | None
    churn_rate: float | None


@dataclass(frozen=True)
class VersionPerformance:
    """A served version's realized performance on one mature prediction week."""

    model_version: str
    n_predictions: int  # one per customer after de-duplication
    n_matched: int
    match_rate: float
    n_churners: int
    auc: float | None  # None when the matched rows lack a class
    auc_lower: float | None
    auc_upper: float | None
    interval_method: str
    brier: float | None
    calibration_error: float | None  # expected calibration error, equal-width bins
    reliability: tuple[ReliabilityBin, ...]
    top_precision: float | None  # precision in the top 10% by probability
    top_recall: float | None
    slices: tuple[SliceResult, ...] = field(default_factory=tuple)


def delong_interval(y: np.ndarray, p: np.ndarray, level: float) -> tuple[float, float]:
    """The AUC's normal interval with DeLong's variance, from one sort: rows tied on the
    score share their placement values, so every sum runs over the distinct scores."""
    order = np.argsort(p, kind="stable")
    s, pos = p[order], y[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    n_pos_g = np.add.reduceat(pos.astype(np.int64), starts)
    n_g = np.diff(np.r_[starts, s.size])
    n_neg_g = n_g - n_pos_g
    n_pos, n_neg = int(n_pos_g.sum()), int(n_neg_g.sum())
    # a churner's share of stayers below it (ties 1/2); a stayer's share of churners above
    v_pos = (np.cumsum(n_neg_g) - n_neg_g + 0.5 * n_neg_g) / n_neg
    v_neg = (n_pos - np.cumsum(n_pos_g) + 0.5 * n_pos_g) / n_pos
    auc_ = float((n_pos_g * v_pos).sum() / n_pos)
    var_pos = float((n_pos_g * (v_pos - auc_) ** 2).sum() / max(n_pos - 1, 1))
    var_neg = float((n_neg_g * (v_neg - auc_) ** 2).sum() / max(n_neg - 1, 1))
    var = var_pos / n_pos + var_neg / n_neg
    half = float(stats.norm.ppf(0.5 + level / 2.0)) * math.sqrt(max(var, 0.0))
    return auc_ - half, auc_ + half


def reliability_bins(
    y: np.ndarray, p: np.ndarray, n_bins: int = RELIABILITY_BINS
) -> tuple[float, tuple[ReliabilityBin, ...]]:
    """Expected calibration error (count-weighted |mean probability - churn rate| over
    ``n_bins`` equal-width bins of [0, 1]) and the bins themselves."""
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    bins = []
    for b in range(n_bins):
        n = int(counts[b])
        bins.append(
            ReliabilityBin(
                b / n_bins,
                (b + 1) / n_bins,
                n,
                float(sum_p[b] / n) if n else None,
                float(sum_y[b] / n) if n else None,
            )
        )
    ece = float(np.abs(sum_p - sum_y).sum() / max(p.size, 1))
    return ece, tuple(bins)


def top_share_precision_recall(
    y: np.ndarray, p: np.ndarray, share: float = TOP_SHARE
) -> tuple[float | None, float | None]:
    """Precision and recall of the top ``share`` of rows by probability (at least one row)."""
    if y.size == 0:
        return None, None
    k = max(1, math.ceil(share * y.size))
    top = np.argpartition(-p, k - 1)[:k]
    hits = float(y[top].sum())
    churners = float(y.sum())
    return hits / k, (hits / churners if churners else None)


def _auc_and_interval(
    y: np.ndarray, p: np.ndarray, settings: PerformanceSettings
) -> tuple[float | None, float | None, float | None, str]:
    n_pos = int(y.sum())
    if n_pos in (0, y.size):
        return None, None, None, "none: the matched rows hold one class"
    point = float(roc_auc_score(y, p))
    if y.size > settings.bootstrap_max_rows:
        lower, upper = delong_interval(y, p, settings.level)
        return point, lower, upper, "DeLong normal interval"
    ci = bootstrap_auc_ci(y, p, settings.n_resamples, settings.level, settings.seed)
    return point, ci.lower, ci.upper, ci.method


def version_metrics(
    rows: pd.DataFrame,
    model_version: str,
    settings: PerformanceSettings,
    spec: Spec | None = None,
) -> VersionPerformance:
    """Realized metrics of one version's joined rows (``join_outcomes`` rows of it).

    ``spec`` (the version's own) adds AUC per slice when the rows carry its slice columns
    (the inference log logs the input features); otherwise every slice is reported skipped.
    """
    matched = rows.loc[rows["matched"].to_numpy(dtype=bool)]
    y = matched["outcome"].to_numpy(dtype=np.int64)
    p = pd.to_numeric(matched["probability"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"version {model_version}: 'probability' must be finite and in [0, 1]")
    point, lower, upper, method = _auc_and_interval(y, p, settings)
    ece, bins = reliability_bins(y, p)
    precision, recall = top_share_precision_recall(y, p)
    return VersionPerformance(
        model_version=str(model_version),
        n_predictions=len(rows),
        n_matched=int(y.size),
        match_rate=float(y.size / len(rows)) if len(rows) else 0.0,
        n_churners=int(y.sum()),
        auc=point,
        auc_lower=lower,
        auc_upper=upper,
        interval_method=method,
        brier=float(np.mean((p - y) ** 2)) if y.size else None,
        calibration_error=ece if y.size else None,
        reliability=bins,
        top_precision=precision,
        top_recall=recall,
        slices=_slice_results(matched, y, p, spec),
    )


def _slice_results(
    matched: pd.DataFrame, y: np.ndarray, p: np.ndarray, spec: Spec | None
) -> tuple[SliceResult, ...]:
    if spec is None or not spec.slices:
        return ()
    columns = sorted({sl.column for sl in spec.slices})
    missing = [c for c in columns if c not in matched.columns]
    if missing:
        reason = f"the predictions carry no {missing} (the inference log's input features)"
        return tuple(SliceResult(name, 0, 0, None, reason) for name in spec.slice_names())
    masks = default_slices(matched.reset_index(drop=True), spec)
    return tuple(slice_aucs((y, p), masks))


@dataclass(frozen=True)
class WeekPerformance:
    """One prediction week: ``pending`` (outcomes not final yet) or ``scored``."""

    week_start: str
    status: str  # "pending" or "scored"
    matures_at: int  # Unix seconds
    n_logged: int
    n_without_id: int
    versions: tuple[VersionPerformance, ...]


def week_performance(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    week_start: str,
    now_ts: float,
    settings: PerformanceSettings,
    specs: Mapping[str, Spec] | None = None,
) -> WeekPerformance:
    """Realized performance of every version served in the week starting ``week_start``.

    A week that is not mature at ``now_ts`` is ``pending``: nothing is joined or scored (its
    outcomes are not final; scoring them would count late churners as stayers). ``specs``
    maps a version to its spec, for the slice AUCs.
    """
    due = matures_at(week_start, settings.label_delay_days)
    if float(now_ts) < due:
        start, end = week_bounds(week_start)
        ts = _unix_seconds(predictions["ts"], "predictions column 'ts'")
        n = int(((ts >= start) & (ts < end)).sum())
        return WeekPerformance(str(week_start), "pending", due, n, 0, ())
    joined = join_outcomes(predictions, outcomes, week_start, settings.label_delay_days)
    rows = joined.rows
    versions = []
    for version, part in rows.groupby(rows["model_version"].astype(str), sort=True):
        spec = (specs or {}).get(str(version))
        versions.append(version_metrics(part, str(version), settings, spec))
    return WeekPerformance(
        str(week_start), "scored", due, joined.n_logged, joined.n_without_id, tuple(versions)
    )


# ---------------------------------------------------------------------------------------
# checks


@dataclass(frozen=True)
class PerformanceCheck:
    """The outcome of one realized-performance check of one version."""

    passed: bool
    description: str


def realized_auc_check(
    perf: VersionPerformance, holdout_auc: float, tolerance: float
) -> PerformanceCheck:
    """Fails when the realized AUC's interval lies wholly below ``holdout_auc - tolerance``
    (a drop beyond the tolerance that the evidence shows); passes otherwise."""
    if perf.auc is None or perf.auc_upper is None:
        return PerformanceCheck(
            True, f"version {perf.model_version}: no AUC ({perf.interval_method})"
        )
    floor = holdout_auc - tolerance
    passed = perf.auc_upper >= floor
    verb = "consistent with" if passed else "below"
    return PerformanceCheck(
        passed,
        f"version {perf.model_version}: realized AUC {perf.auc:.4f} "
        f"[{perf.auc_lower:.4f}, {perf.auc_upper:.4f}] is {verb} holdout AUC "
        f"{holdout_auc:.4f} - tolerance {tolerance:.3f} = {floor:.4f}",
    )


def calibration_check(perf: VersionPerformance, max_error: float) -> PerformanceCheck:
    """Fails when the expected calibration error exceeds ``max_error``."""
    if perf.calibration_error is None:
        return PerformanceCheck(True, f"version {perf.model_version}: no matched rows")
    passed = perf.calibration_error <= max_error
    return PerformanceCheck(
        passed,
        f"version {perf.model_version}: calibration error {perf.calibration_error:.4f} "
        f"{'<=' if passed else '>'} {max_error:.4f}",
    )


def match_rate_check(perf: VersionPerformance, min_rate: float) -> PerformanceCheck:
    """Fails when fewer than ``min_rate`` of the version's predictions found an outcome."""
    passed = perf.match_rate >= min_rate
    return PerformanceCheck(
        passed,
        f"version {perf.model_version}: {perf.n_matched} of {perf.n_predictions} predictions "
        f"matched an outcome ({perf.match_rate:.1%}; bound {min_rate:.1%})",
    )
