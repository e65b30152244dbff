"""Evaluation statistics for a binary churn classifier: AUC, its uncertainty, slices.

Everything here is rank based. ``auc`` is the Mann-Whitney statistic with ties counted
as one half, which is what ``sklearn.metrics.roc_auc_score`` computes. Intervals come
from a *Poisson bootstrap*: every resample gives each row an independent Poisson(1)
multiplicity (the large-n limit of multinomial resampling; Hanley & MacGibbon 2006,
Chamandy et al. 2012). Comparisons of two models are *paired*: both models see the same
multiplicities, so the interval is for the AUC delta on one holdout, not for two
independent AUCs.

How the bootstrap is fast (1,000 resamples of 100k rows in well under a second):
the weighted AUC of a resample is

    AUC_w = sum_{i pos} w_i * (W_neg below s_i + W_neg tied with s_i / 2) / (W_pos * W_neg)

Sort the *smaller* class once per model; a resample's weights of that class, in that
order, become a prefix-sum table; every row of the other class looks its strictly-below
and below-or-tied positions up in the table (positions found once by ``searchsorted``).
So a chunk of resamples is one prefix sum over the small class, one or two row gathers
and one row-wise dot product over the large class. All counting is in exact integers
(int32 with int64 block totals), so a resample's AUC equals ``roc_auc_score`` with the
same ``sample_weight`` up to the final division.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

# ---------------------------------------------------------------------------------------
# validation helpers


def _as_binary_labels(y_true: ArrayLike, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a bool array; raise if it is not 1-D binary (0/1 or bool) without nulls."""
    arr = pd.Series(np.asarray(y_true)) if not isinstance(y_true, pd.Series) else y_true
    if arr.isna().any():
        raise ValueError(f"{name} must not contain missing values, got {int(arr.isna().sum())}")
    values = np.asarray(arr.to_numpy())
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if values.dtype == bool:
        return values
    if not np.issubdtype(values.dtype, np.number):
        try:
            values = values.astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be binary 0/1 labels, got dtype {values.dtype}") from exc
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        raise ValueError(
            f"{name} must contain only 0 and 1, got {np.unique(values[bad])[:5].tolist()}"
        )
    return values.astype(bool)


def _as_scores(scores: ArrayLike, n: int, name: str) -> np.ndarray:
    """``scores`` as a finite float64 array of length ``n``; raise naming ``name`` otherwise."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric scores") from exc
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries (one per label), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(arr)).sum())} NaN/inf")
    return arr


def _require_both_classes(y: np.ndarray, name: str = "y_true") -> tuple[int, int]:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{name} must contain both classes to define an AUC, got {n_pos} positives "
            f"and {n_neg} negatives"
        )
    return n_pos, n_neg


def _check_resampling(n_resamples: int, level: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise ValueError(f"n_resamples must be an integer, got {n_resamples!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


# ---------------------------------------------------------------------------------------
# point AUC


def auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC by the Mann-Whitney rank sum, ties at one half (average ranks).

    Equal to ``sklearn.metrics.roc_auc_score(y_true, scores)`` to floating rounding.
    Raises ``ValueError`` if ``y_true`` is not binary, lacks a class, or ``scores`` has
    NaN/inf or the wrong length.
    """
    y = _as_binary_labels(y_true)
    x = _as_scores(scores, y.size, "scores")
    n_pos, n_neg = _require_both_classes(y)
    ranks = stats.rankdata(x, method="average")
    # rank sums are (half-)integers below 2**53 for any realistic n, so this is exact
    rank_sum = float(ranks[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# ---------------------------------------------------------------------------------------
# DeLong


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test for two correlated AUCs on the same rows (delta = auc_1 - auc_2)."""

    auc_1: float
    auc_2: float
    delta: float
    variance: float  # variance of the delta estimate
    se: float
    z: float
    p_value: float  # two-sided
    n: int
    n_pos: int


def _structural_components(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sun & Xu (2014) midrank form of DeLong's placement values, for k score rows.

    ``x`` is (k, n). Returns (aucs (k,), v_pos (k, n_pos), v_neg (k, n_neg)) where
    v_pos[i] is the share of negatives below positive i (ties 1/2), v_neg[j] the share
    of positives above negative j.
    """
    pos = x[:, y]
    neg = x[:, ~y]
    m = pos.shape[1]
    n = neg.shape[1]
    tx = stats.rankdata(pos, method="average", axis=1)
    ty = stats.rankdata(neg, method="average", axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), method="average", axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v_pos = (tz[:, :m] - tx) / n
    v_neg = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v_pos, v_neg


def _normal_test(delta: float, variance: float) -> tuple[float, float]:
    """z and two-sided p for ``delta`` with ``variance``; a zero variance is handled.

    Zero variance happens when the two score vectors rank the rows identically (delta
    is then 0: z = 0, p = 1) or both are perfect; a non-zero delta with zero estimated
    variance is reported as z = +-inf, p = 0.
    """
    if variance <= 0.0:
        if delta == 0.0:
            return 0.0, 1.0
        return math.copysign(math.inf, delta), 0.0
    z = delta / math.sqrt(variance)
    return z, float(2.0 * stats.norm.sf(abs(z)))


def delong_test(y_true: ArrayLike, scores_1: ArrayLike, scores_2: ArrayLike) -> DeLongResult:
    """DeLong et al. (1988) test of AUC(scores_1) - AUC(scores_2) on the same rows.

    Uses the O(n log n) midrank algorithm of Sun & Xu (2014). The variance is the
    unbiased DeLong estimate: var = S10/n_pos + S01/n_neg contracted with (1, -1).
    """
    y = _as_binary_labels(y_true)
    x1 = _as_scores(scores_1, y.size, "scores_1")
    x2 = _as_scores(scores_2, y.size, "scores_2")
    n_pos, n_neg = _require_both_classes(y)
    aucs, v_pos, v_neg = _structural_components(y, np.vstack([x1, x2]))
    contrast = np.array([1.0, -1.0])
    var_pos = float(contrast @ np.atleast_2d(np.cov(v_pos)) @ contrast) if n_pos > 1 else 0.0
    var_neg = float(contrast @ np.atleast_2d(np.cov(v_neg)) @ contrast) if n_neg > 1 else 0.0
    variance = max(var_pos / n_pos + var_neg / n_neg, 0.0)
    delta = float(aucs[0] - aucs[1])
    if np.array_equal(x1, x2):
        delta, variance = 0.0, 0.0
    z, p = _normal_test(delta, variance)
    return DeLongResult(
        auc_1=float(aucs[0]),
        auc_2=float(aucs[1]),
        delta=delta,
        variance=variance,
        se=math.sqrt(variance),
        z=z,
        p_value=p,
        n=int(y.size),
        n_pos=n_pos,
    )


# ---------------------------------------------------------------------------------------
# Poisson(1) multiplicities, fast and exact


def _poisson1_tables() -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF tables for Poisson(1) driven by 16-bit uniforms.

    A 16-bit cell c covers u in [c/2^16, (c+1)/2^16). Where no CDF step falls inside the
    cell, the count is the same for every u in it and the table holds it; the few cells
    that straddle a step (8 of 65,536) hold 255 and are resolved with a fresh uniform
    inside the cell. The draws are therefore exactly Poisson(1) (to double precision).
    """
    cdf = stats.poisson.cdf(np.arange(40), 1.0)
    last = int(np.searchsorted(cdf, 1.0))
    cdf = cdf[: last + 1].copy()
    cdf[-1] = 1.0
    cells = np.arange(65536, dtype=np.float64)
    lo, hi = cells / 65536.0, (cells + 1.0) / 65536.0
    counts = np.searchsorted(cdf, lo, side="right")
    straddle = np.zeros(cells.size, dtype=bool)
    for step in cdf:
        straddle |= (lo < step) & (step < hi)
    table = np.where(straddle, 255, counts).astype(np.uint8)
    return table, cdf


_POISSON_TABLE, _POISSON_CDF = _poisson1_tables()
_LOOKUP_PIECE = 262_144


def poisson_multiplicities(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 array of independent Poisson(1) draws (bootstrap multiplicities)."""
    size = shape[0] * shape[1]
    cells = rng.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size]
    counts = np.empty(size, dtype=np.uint8)
    # table lookups in L2-sized pieces: numpy widens the index to intp first
    for start in range(0, size, _LOOKUP_PIECE):
        stop = start + _LOOKUP_PIECE
        np.take(_POISSON_TABLE, cells[start:stop], out=counts[start:stop])
    straddling = np.flatnonzero(counts == 255)
    if straddling.size:
        u = (cells[straddling] + rng.random(straddling.size)) / 65536.0
        counts[straddling] = np.searchsorted(_POISSON_CDF, u, side="right")
    return counts.reshape(shape)


# ---------------------------------------------------------------------------------------
# weighted AUCs for many weight vectors at once

_INT32_MAX = 2**31 - 1
_PREFIX_BLOCK = 64  # rows per block of the two-level prefix sum
_CHUNK_ELEMENTS = 6_400_000  # rows x resamples per chunk: ~25 MB per int32 matrix


def _prefix_table(weights: np.ndarray) -> np.ndarray:
    """Exclusive-to-inclusive prefix sums along rows: out[0] = 0, out[k] = sum(weights[:k]).

    Two-level (blocks of 64 rows, then block offsets) because ``np.cumsum`` along axis 0
    is not vectorised across columns and is ~4x slower on this layout.
    """
    n, bc = weights.shape
    m = max(1, min(_PREFIX_BLOCK, n))
    nb = -(-n // m)
    table = np.zeros((1 + nb * m, bc), dtype=np.int32)
    table[1 : n + 1] = weights
    blocks = table[1:].reshape(nb, m, bc)
    for k in range(1, m):
        np.add(blocks[:, k], blocks[:, k - 1], out=blocks[:, k])
    if nb > 1:
        offsets = np.cumsum(blocks[:, -1], axis=0)
        blocks[1:] += offsets[:-1, None, :]
    return table[: n + 1]


def _rowwise_dot(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """Exact column sums of a*b for int32 matrices whose products are <= ``bound``.

    int32 einsum is as fast as float32 and exact while a block's partial sum stays
    below 2**31; blocks are then added in int64.
    """
    n, bc = a.shape
    rows = _INT32_MAX // max(bound, 1)
    if rows < 1:
        return np.einsum("ij,ij->j", a.astype(np.int64), b.astype(np.int64))
    if rows >= n:
        return np.einsum("ij,ij->j", a, b).astype(np.int64)
    nb = n // rows
    head = nb * rows
    total = np.einsum(
        "bij,bij->bj", a[:head].reshape(nb, rows, bc), b[:head].reshape(nb, rows, bc)
    ).sum(axis=0, dtype=np.int64)
    if head < n:
        total += np.einsum("ij,ij->j", a[head:], b[head:]).astype(np.int64)
    return total


class _RankEngine:
    """Sorting work done once for k score vectors; then weighted AUCs for weight chunks.

    The *c* class (cumulated) is the smaller class, the *g* class (gathered) the larger.
    Weights of the c class are laid out in model 0's sorted order; model k reads them
    through ``perm[k]`` (None when it sorts the same way as model 0).
    """

    def __init__(self, y: np.ndarray, score_rows: Sequence[np.ndarray]) -> None:
        pos_idx = np.flatnonzero(y)
        neg_idx = np.flatnonzero(~y)
        self.c_is_pos = pos_idx.size <= neg_idx.size
        c_idx, g_idx = (pos_idx, neg_idx) if self.c_is_pos else (neg_idx, pos_idx)
        self.g_idx = g_idx
        self.perm: list[np.ndarray | None] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray | None] = []  # None: no cross-class ties, hi == lo
        inverse = np.empty(c_idx.size, dtype=np.intp)
        for k, x in enumerate(score_rows):
            xc = x[c_idx]
            order = np.argsort(xc, kind="stable")
            sorted_c = xc[order]
            xg = x[g_idx]
            lo = np.searchsorted(sorted_c, xg, side="left")
            hi = np.searchsorted(sorted_c, xg, side="right")
            if k == 0:
                self.c_idx = c_idx[order]
                inverse[order] = np.arange(order.size)
                self.perm.append(None)
            else:
                perm = inverse[order]
                same = np.array_equal(perm, np.arange(perm.size))
                self.perm.append(None if same else perm)
            self.lo.append(lo)
            self.hi.append(None if np.array_equal(lo, hi) else hi)

    def split(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-row weights (n, bc) -> (c-class weights in engine order, g-class weights)."""
        return weights[self.c_idx], weights[self.g_idx]

    def aucs(self, w_c: np.ndarray, w_g: np.ndarray) -> np.ndarray:
        """Weighted AUCs, shape (k, bc); NaN where a column has no weight in a class."""
        g32 = w_g.astype(np.int32, copy=False)
        tot_g = g32.sum(axis=0).astype(np.int64)
        max_g = int(g32.max(initial=0))
        out = np.empty((len(self.lo), w_c.shape[1]), dtype=np.float64)
        for k, (perm, lo, hi) in enumerate(zip(self.perm, self.lo, self.hi, strict=True)):
            table = _prefix_table(w_c if perm is None else np.take(w_c, perm, axis=0))
            tot_c = table[-1].astype(np.int64)
            bound = max_g * int(tot_c.max(initial=0)) * (1 if hi is None else 2)
            below = np.take(table, lo, axis=0)
            if hi is None:
                twice = 2 * _rowwise_dot(g32, below, bound)
            else:
                below += np.take(table, hi, axis=0)
                twice = _rowwise_dot(g32, below, bound)
            denom = 2 * tot_c * tot_g
            numer = 2 * tot_c * tot_g - twice if self.c_is_pos else twice
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k] = np.where(denom > 0, numer / np.where(denom > 0, denom, 1), np.nan)
        return out

    def bootstrap(self, n_resamples: int, seed: int) -> tuple[np.ndarray, int]:
        """AUCs of ``n_resamples`` Poisson resamples, (n_valid, k); and the skipped count.

        A resample whose multiplicities leave one class empty has no AUC; it is skipped
        (not redrawn) and counted, so the caller can report it. That only happens on tiny
        or extremely unbalanced data (probability about exp(-n_minority)).
        """
        rng = np.random.default_rng(seed)
        n_c, n_g = self.c_idx.size, self.g_idx.size
        chunk = int(min(1024, max(8, _CHUNK_ELEMENTS // (n_c + n_g))))
        parts = []
        for start in range(0, n_resamples, chunk):
            bc = min(chunk, n_resamples - start)
            w_c = poisson_multiplicities(rng, (n_c, bc))
            w_g = poisson_multiplicities(rng, (n_g, bc))
            parts.append(self.aucs(w_c, w_g).T)
        values = np.concatenate(parts, axis=0)
        valid = ~np.isnan(values).any(axis=1)
        return values[valid], int((~valid).sum())


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lower), float(upper)


# ---------------------------------------------------------------------------------------
# public bootstrap API


@dataclass(frozen=True)
class AucInterval:
    """An AUC with a bootstrap percentile interval."""

    point: float
    lower: float
    upper: float
    n_resamples: int  # resamples used (requested minus skipped)
    level: float
    method: str
    n_skipped: int = 0  # resamples dropped because one class got zero weight


def bootstrap_auc_ci(
    y: ArrayLike,
    scores: ArrayLike,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> AucInterval:
    """AUC with a Poisson-bootstrap percentile interval at ``level``.

    Resamples with one class empty are skipped and counted in ``n_skipped``; if every
    resample is skipped the data is too small and ``ValueError`` is raised.
    """
    _check_resampling(n_resamples, level)
    labels = _as_binary_labels(y, "y")
    x = _as_scores(scores, labels.size, "scores")
    _require_both_classes(labels, "y")
    point = auc(labels, x)
    values, skipped = _RankEngine(labels, [x]).bootstrap(n_resamples, seed)
    if values.shape[0] == 0:
        raise ValueError(f"all {n_resamples} resamples lost a class; y has too few rows")
    lower, upper = _percentile_interval(values[:, 0], level)
    return AucInterval(
        point=point,
        lower=lower,
        upper=upper,
        n_resamples=int(values.shape[0]),
        level=float(level),
        method="poisson bootstrap, percentile",
        n_skipped=skipped,
    )


@dataclass(frozen=True)
class PairedComparison:
    """Challenger vs champion AUC on the same rows; delta = challenger - champion."""

    auc_challenger: float
    auc_champion: float
    delta: float
    delta_lower: float  # paired bootstrap percentile interval of the delta
    delta_upper: float
    level: float
    delong_z: float
    delong_p_value: float  # two-sided
    delong_variance: float
    delong_se: float
    n: int
    n_pos: int
    n_resamples: int  # resamples used (requested minus skipped)
    n_skipped: int
    method: str = "paired poisson bootstrap, percentile; DeLong (Sun & Xu 2014)"

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain-type fields, for metadata and logging."""
        return dict(self.__dict__)


def normal_quantile(p: float) -> float:
    """The standard normal quantile at ``p`` (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return float(stats.norm.ppf(p))


def detectable_gain(se: float, threshold: float, power: float = 0.8) -> float:
    """The true AUC gain that a rule "promote when the observed delta >= ``threshold``"
    passes with probability ``power``, when the observed delta is normal with standard
    error ``se`` (the paired DeLong SE): ``threshold + z_power * se``.

    With ``threshold = z_(1-alpha/2) * se`` this is the textbook minimum detectable effect
    of a two-sided test at level alpha, e.g. 2.8 * se for 95% and 80% power.
    """
    if not (math.isfinite(se) and se >= 0):
        raise ValueError(f"se must be a finite standard error >= 0, got {se}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return float(threshold + normal_quantile(power) * se)


def paired_bootstrap_auc_delta(
    y: ArrayLike,
    scores_challenger: ArrayLike,
    scores_champion: ArrayLike,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Paired bootstrap interval and DeLong test for AUC(challenger) - AUC(champion).

    Both models are scored on the same Poisson-resampled rows in every resample, so the
    interval reflects the correlation between the models. A resample that leaves a class
    empty is skipped (``n_skipped``). Identical score vectors give delta 0 with [0, 0].
    """
    _check_resampling(n_resamples, level)
    labels = _as_binary_labels(y, "y")
    x_new = _as_scores(scores_challenger, labels.size, "scores_challenger")
    x_old = _as_scores(scores_champion, labels.size, "scores_champion")
    n_pos, _ = _require_both_classes(labels, "y")
    test = delong_test(labels, x_new, x_old)
    values, skipped = _RankEngine(labels, [x_new, x_old]).bootstrap(n_resamples, seed)
    if values.shape[0] == 0:
        raise ValueError(f"all {n_resamples} resamples lost a class; y has too few rows")
    lower, upper = _percentile_interval(values[:, 0] - values[:, 1], level)
    return PairedComparison(
        auc_challenger=test.auc_1,
        auc_champion=test.auc_2,
        delta=test.delta,
        delta_lower=lower,
        delta_upper=upper,
        level=float(level),
        delong_z=test.z,
        delong_p_value=test.p_value,
        delong_variance=test.variance,
        delong_se=test.se,
        n=int(labels.size),
        n_pos=n_pos,
        n_resamples=int(values.shape[0]),
        n_skipped=skipped,
    )
