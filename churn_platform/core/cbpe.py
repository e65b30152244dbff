"""Confidence-based performance estimation (CBPE): the AUC of a week before its outcomes.

At training time an isotonic calibrator is fitted on the holdout (served probability ->
observed churn rate) and logged with the model version (``cbpe_calibrator.json`` in the
version's run; ``IsotonicCalibrator.to_dict``). On a week whose outcomes are not final,
each served probability ``s_i`` becomes ``c_i = calibrator(s_i)``, the chance that the
customer churns. The expected ROC curve counts row ``i`` as a churner with weight ``c_i``
and as a stayer with weight ``1 - c_i``, so the estimated AUC is the weighted Mann-Whitney
statistic

    AUC_est = sum_i c_i * (sum_{j: s_j < s_i} (1 - c_j) + 1/2 sum_{j: s_j = s_i} (1 - c_j))
              / (sum_i c_i * sum_j (1 - c_j))

which is the trapezoid area under NannyML's expected ROC (``estimate_roc_auc`` of its
CBPE: thresholds at every distinct value, expected TP/FP/FN/TN as sums of probabilities).
``estimate_auc(c)`` ranks by the calibrated values themselves, as NannyML does; the
platform ranks by the served scores (``estimate_auc(c, scores=s)``), which is what the
realized AUC ranks by (isotonic steps tie rows the served score still orders).

What it cannot see (``BLIND_SPOT``): CBPE assumes that P(churn | score) is still what the
holdout showed. Covariate shift (customers move, the scores move with them) is followed;
concept drift (the same customers churning for other reasons) is invisible to it, because
nothing in the served probabilities changes. That is why the realized check on matured
outcomes exists, and why the estimate's error is reported beside the realized AUC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.isotonic import IsotonicRegression

#: The run artefact that carries a version's calibrator.
CALIBRATOR_ARTIFACT = "cbpe_calibrator.json"

BLIND_SPOT = (
    "CBPE estimates AUC from the served probabilities and the holdout's calibration; it "
    "follows covariate shift but cannot see concept drift (customers with the same "
    "features churning differently), so the realized AUC on matured outcomes is checked "
    "as well and the estimate's error is reported when the outcomes arrive."
)


def _probabilities(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
        raise ValueError(f"{name} must be finite probabilities in [0, 1]")
    return arr


@dataclass(frozen=True)
class IsotonicCalibrator:
    """A monotone map from served probability to churn rate: piecewise linear through
    ``(x, y)`` (sklearn's ``IsotonicRegression`` thresholds), clipped outside ``x``."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    n_fit: int

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x) < 1:
            raise ValueError("calibrator 'x' and 'y' must be non-empty and of equal length")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("calibrator 'x' must be non-decreasing")
        if any(not 0.0 <= v <= 1.0 for v in self.y):
            raise ValueError("calibrator 'y' must be probabilities in [0, 1]")

    def apply(self, scores: ArrayLike) -> np.ndarray:
        """The calibrated churn probability of each served probability."""
        s = _probabilities(scores, "scores")
        return np.interp(s, np.asarray(self.x), np.asarray(self.y))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the logged artefact; no pickle)."""
        return {"kind": "isotonic", "x": list(self.x), "y": list(self.y), "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IsotonicCalibrator:
        """The calibrator of ``to_dict``; a ``ValueError`` names what is wrong."""
        if data.get("kind") != "isotonic":
            raise ValueError(f"calibrator 'kind' must be 'isotonic', got {data.get('kind')!r}")
        try:
            x = tuple(float(v) for v in data["x"])
            y = tuple(float(v) for v in data["y"])
            n_fit = int(data.get("n_fit", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"calibrator needs numeric lists 'x' and 'y': {exc}") from exc
        return cls(x, y, n_fit)


def fit_calibrator(y_true: ArrayLike, scores: ArrayLike) -> IsotonicCalibrator:
    """Fit the isotonic calibrator on holdout labels and served probabilities."""
    s = _probabilities(scores, "scores")
    y = np.asarray(y_true, dtype=np.float64)
    if y.shape != s.shape or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"y_true must be 0/1 labels, one per score ({s.size}), got {y.shape}")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(s, y)
    return IsotonicCalibrator(
        tuple(float(v) for v in iso.X_thresholds_),
        tuple(float(v) for v in iso.y_thresholds_),
        int(s.size),
    )


def estimate_auc(calibrated: ArrayLike, scores: ArrayLike | None = None) -> float | None:
    """The expected AUC of ``scores`` when row i churns with probability ``calibrated[i]``
    (module docstring); ``scores`` None ranks by ``calibrated`` (NannyML's definition).

    None when the expected churners or stayers are zero (all probabilities 0 or all 1).
    """
    c = _probabilities(calibrated, "calibrated")
    s = c if scores is None else np.asarray(scores, dtype=np.float64)
    if s.shape != c.shape:
        raise ValueError(f"scores must have one value per calibrated probability ({c.size})")
    order = np.argsort(s, kind="stable")
    s_sorted, pos, neg = s[order], c[order], 1.0 - c[order]
    # groups of tied scores: positive and negative weight per distinct score
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos_g = np.add.reduceat(pos, starts) if c.size else pos
    neg_g = np.add.reduceat(neg, starts) if c.size else neg
    total_pos, total_neg = float(pos_g.sum()), float(neg_g.sum())
    if total_pos <= 0.0 or total_neg <= 0.0:
        return None
    neg_below = np.cumsum(neg_g) - neg_g
    return float((pos_g * (neg_below + 0.5 * neg_g)).sum() / (total_pos * total_neg))


def estimate_auc_binned(
    calibrated: ArrayLike, scores: ArrayLike | None = None, bins: int = 2**16
) -> tuple[float | None, float]:
    """``estimate_auc`` without a sort: scores (probabilities in [0, 1]) are put in ``bins``
    equal-width bins and counted (``np.bincount``, linear time). Rows in one bin count as
    tied, so the result differs from ``estimate_auc`` by at most the returned bound: half
    the expected churner-stayer pairs that share a bin. Returns (estimate, bound)."""
    c = _probabilities(calibrated, "calibrated")
    s = c if scores is None else _probabilities(scores, "scores")
    if s.shape != c.shape:
        raise ValueError(f"scores must have one value per calibrated probability ({c.size})")
    if isinstance(bins, bool) or int(bins) < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    idx = np.minimum((s * bins).astype(np.int64), int(bins) - 1)
    pos = np.bincount(idx, weights=c, minlength=bins)
    neg = np.bincount(idx, weights=1.0 - c, minlength=bins)
    total_pos, total_neg = float(pos.sum()), float(neg.sum())
    if total_pos <= 0.0 or total_neg <= 0.0:
        return None, 0.0
    denom = total_pos * total_neg
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / denom), float(0.5 * (pos * neg).sum() / denom)


def estimate_auc_calibrated(
    calibrator: IsotonicCalibrator, scores: ArrayLike, bins: int = 2**16
) -> tuple[float | None, float]:
    """``estimate_auc_binned(calibrator.apply(scores), scores)`` without calibrating every row.

    The served scores are put in ``bins`` equal-width bins and counted (``np.bincount``).
    An isotonic calibrator is flat almost everywhere: in a bin where it is flat, the
    calibrated values of its rows sum to the count times the flat value; only the rows of
    the few bins where it rises (a knot or a ramp) are calibrated one by one. As the
    calibrator is monotone, ranking by the score equals ranking by the calibrated value up
    to ties that change nothing, so this is also NannyML's definition (``estimate_auc(c)``).

    Rows in one bin count as tied. A tied pair moves the estimate by at most half the
    calibrator's rise across the bin (nothing where it is flat) and by at most half its
    expected churner-stayer weight, so the returned bound is the sum over bins of the
    smaller of the two, over the denominator. Returns (estimate, bound)."""
    s = _probabilities(scores, "scores")
    if isinstance(bins, bool) or int(bins) < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    x, y = np.asarray(calibrator.x), np.asarray(calibrator.y)
    idx = (s * bins).astype(np.intp)
    np.minimum(idx, bins - 1, out=idx)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    at_edges = np.interp(np.arange(bins + 1, dtype=np.float64) / bins, x, y)
    rise = np.diff(at_edges)
    varying = rise != 0.0  # the calibrator is not flat across the bin (or a knot is inside)
    varying[np.minimum((x * bins).astype(np.intp), bins - 1)] = True
    pos = count * at_edges[:-1]
    rows = np.flatnonzero(varying[idx])
    if rows.size:
        exact = np.bincount(idx[rows], weights=np.interp(s[rows], x, y), minlength=bins)
        pos = np.where(varying, exact, pos)
    neg = count - pos
    total_pos, total_neg = float(pos.sum()), float(neg.sum())
    if total_pos <= 0.0 or total_neg <= 0.0:
        return None, 0.0
    denom = total_pos * total_neg
    below = np.cumsum(neg) - neg
    bound = np.minimum(0.5 * pos * neg, 0.25 * count * (count - 1.0) * rise).sum() / denom
    return float((pos * (below + 0.5 * neg)).sum() / denom), float(bound)


@dataclass(frozen=True)
class CbpeEstimate:
    """A version's estimated AUC on one week, and (once outcomes arrive) its error."""

    model_version: str
    n: int
    auc_estimate: float | None
    expected_churn_rate: float
    realized_auc: float | None = None

    @property
    def error(self) -> float | None:
        """Estimate minus realized AUC (None until the week is mature)."""
        if self.auc_estimate is None or self.realized_auc is None:
            return None
        return self.auc_estimate - self.realized_auc


def estimate_version(
    model_version: str,
    scores: ArrayLike,
    calibrator: IsotonicCalibrator,
    realized_auc: float | None = None,
) -> CbpeEstimate:
    """CBPE of one version's served probabilities of a week (``realized_auc`` when known)."""
    s = _probabilities(scores, f"version {model_version} probabilities")
    c = calibrator.apply(s)
    return CbpeEstimate(
        str(model_version),
        int(s.size),
        estimate_auc(c, s) if s.size else None,
        float(c.mean()) if s.size else 0.0,
        realized_auc,
    )
