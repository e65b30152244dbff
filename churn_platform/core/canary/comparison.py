"""The shadow step's comparison of the candidate with the baseline on the same requests:
error rate, p95 latency, score PSI, Spearman rank correlation, top-decile agreement, and
which of the configured thresholds they break."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats

from churn_platform.core.canary.config import CanaryConfig
from churn_platform.core.rollout import ShadowObservations


@dataclass(frozen=True)
class ShadowReading:
    """One comparison of a mirror session so far (None: not computable yet)."""

    requests: int
    pairs: int
    candidate_error_rate: float | None
    candidate_p95_seconds: float | None
    baseline_p95_seconds: float | None
    score_psi: float | None
    rank_correlation: float | None
    top_decile_agreement: float | None
    dropped: int
    scores_paired: bool = True  # False: the target cannot see the copies' answers

    def as_dict(self) -> dict[str, float | int | None]:
        """A JSON-friendly view, for the transitions' metadata."""
        return asdict(self)

    def cell(self) -> str:
        """The transitions table's shadow column."""

        def num(value: float | None, spec: str) -> str:
            return "n/a" if value is None else format(value, spec)

        if not self.scores_paired:
            return "mirrored by the Gateway: no paired answers, the metrics source judges"

        p95 = (
            f"p95 {num(_ms(self.candidate_p95_seconds), '.0f')} vs "
            f"{num(_ms(self.baseline_p95_seconds), '.0f')} ms"
        )
        return (
            f"{self.pairs} pairs of {self.requests}, errors "
            f"{num(self.candidate_error_rate, '.2%')}, {p95}, rho "
            f"{num(self.rank_correlation, '.3f')}, top-decile "
            f"{num(self.top_decile_agreement, '.2f')}, PSI {num(self.score_psi, '.3f')}"
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _p95(values: tuple[float, ...]) -> float | None:
    return float(np.quantile(values, 0.95)) if values else None


def score_psi(baseline: np.ndarray, candidate: np.ndarray) -> float:
    """PSI of the candidate's scores against the baseline's, in the baseline's deciles."""
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, 11)[1:-1]))
    bins = len(edges) + 1
    ours = np.bincount(np.searchsorted(edges, baseline, side="right"), minlength=bins)
    theirs = np.bincount(np.searchsorted(edges, candidate, side="right"), minlength=bins)
    # half a request added to every bin: an empty bin in a few hundred scores is sampling,
    # not an infinite shift
    p = (ours + 0.5) / (len(baseline) + 0.5 * bins)
    q = (theirs + 0.5) / (len(candidate) + 0.5 * bins)
    return float(np.sum((q - p) * np.log(q / p)))


def rank_correlation(baseline: np.ndarray, candidate: np.ndarray) -> float | None:
    """Spearman's rho; None when the baseline's scores do not vary (the traffic repeats one
    record: nothing to rank), 0 when only the candidate's do not (it ranks nothing)."""
    if np.ptp(baseline) == 0:
        return None
    if np.ptp(candidate) == 0:
        return 0.0
    rho = float(stats.spearmanr(baseline, candidate).statistic)
    return None if math.isnan(rho) else rho


def top_decile_agreement(baseline: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of the baseline's top-decile requests that are in the candidate's top decile
    (None when the baseline's scores do not vary)."""
    if np.ptp(baseline) == 0:
        return None
    k = max(1, math.ceil(len(baseline) / 10))
    ours = set(np.argsort(-baseline, kind="stable")[:k].tolist())
    theirs = set(np.argsort(-candidate, kind="stable")[:k].tolist())
    return len(ours & theirs) / k


def compare(observed: ShadowObservations, min_pairs: int) -> ShadowReading:
    """The comparison of what the mirror session saw (score statistics once ``min_pairs``
    scores are paired)."""
    pairs = min(len(observed.champion_scores), len(observed.candidate_scores))
    psi = rho = top = None
    if pairs >= min_pairs:
        ours = np.asarray(observed.champion_scores[-pairs:], dtype=float)
        theirs = np.asarray(observed.candidate_scores[-pairs:], dtype=float)
        psi = score_psi(ours, theirs)
        rho = rank_correlation(ours, theirs)
        top = top_decile_agreement(ours, theirs)
    return ShadowReading(
        requests=observed.requests,
        pairs=pairs,
        candidate_error_rate=(
            observed.candidate_errors / observed.requests if observed.requests else None
        ),
        candidate_p95_seconds=_p95(observed.candidate_latency_seconds),
        baseline_p95_seconds=_p95(observed.champion_latency_seconds),
        score_psi=psi,
        rank_correlation=rho,
        top_decile_agreement=top,
        dropped=observed.dropped,
        scores_paired=observed.scores_paired,
    )


def offline_thresholds(
    config: CanaryConfig, baseline: np.ndarray, candidate: np.ndarray
) -> tuple[CanaryConfig, str]:
    """``config`` with the shadow's score thresholds set by what the two models already show
    offline on the same rows (the holdout the gate compared them on), and a line saying so.

    A candidate the gate promoted is meant to score differently: a retrained model beside a
    weak champion can have a score PSI of 5 and a rank correlation of 0.6 on the holdout.
    Live, on mirrored requests, the pair should agree about as well as it did there; a
    broken candidate (scores shuffled, a feature lost in serving) agrees far less. So each
    bound is the configured one or the offline figure loosened by
    ``shadow_offline_margin`` (the PSI bound: twice the offline PSI plus the configured
    bound), whichever lets the offline pair pass."""
    baseline = np.asarray(baseline, dtype=float)
    candidate = np.asarray(candidate, dtype=float)
    margin = config.shadow_offline_margin
    rho = rank_correlation(baseline, candidate)
    top = top_decile_agreement(baseline, candidate)
    psi = score_psi(baseline, candidate)
    # the live top decile holds min_pairs / 10 requests: a share of ~20 is coarse, so the
    # slack is at least three of its standard errors
    k = max(1, math.ceil(config.shadow_min_pairs / 10))
    top_slack = margin if top is None else max(margin, 3 * math.sqrt(top * (1 - top) / k))
    loosened = replace(
        config,
        shadow_min_rank_correlation=(
            config.shadow_min_rank_correlation
            if rho is None
            else max(-1.0, min(config.shadow_min_rank_correlation, rho - margin))
        ),
        shadow_min_top_decile_agreement=(
            config.shadow_min_top_decile_agreement
            if top is None
            else max(0.0, min(config.shadow_min_top_decile_agreement, top - top_slack))
        ),
        # a PSI from a few hundred pairs is noisy in proportion to its size (6.7 offline read
        # 7.0 live for the same healthy pair): twice the offline figure, plus the bound
        shadow_max_score_psi=max(
            config.shadow_max_score_psi, 2 * psi + config.shadow_max_score_psi
        ),
    )

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    note = (
        f"shadow thresholds from the holdout ({len(baseline)} rows scored by both): rho "
        f"{num(rho)}, top-decile {num(top)}, PSI {psi:.3f}; the shadow fails below rho "
        f"{loosened.shadow_min_rank_correlation:.3f} or top-decile "
        f"{loosened.shadow_min_top_decile_agreement:.3f}, or above PSI "
        f"{loosened.shadow_max_score_psi:.3f}"
    )
    return loosened, note


def score_problem(reading: ShadowReading, config: CanaryConfig) -> str:
    """Which score threshold the reading breaks ('' when none, or not computed yet)."""
    rho, top, psi = reading.rank_correlation, reading.top_decile_agreement, reading.score_psi
    if rho is not None and rho < config.shadow_min_rank_correlation:
        return (
            f"rank correlation with the baseline {rho:.3f} < "
            f"{config.shadow_min_rank_correlation:g} over {reading.pairs} paired scores"
        )
    if top is not None and top < config.shadow_min_top_decile_agreement:
        return (
            f"top-decile agreement {top:.2f} < {config.shadow_min_top_decile_agreement:g} "
            f"over {reading.pairs} paired scores"
        )
    if psi is not None and psi > config.shadow_max_score_psi:
        return (
            f"score PSI against the baseline {psi:.3f} > {config.shadow_max_score_psi:g} "
            f"over {reading.pairs} paired scores"
        )
    return ""


def latency_problem(reading: ShadowReading, config: CanaryConfig) -> str:
    """Why the candidate's p95 on the mirrored requests breaks the latency bound ('' when
    it does not, the check is off, or there are too few requests)."""
    ours, theirs = reading.candidate_p95_seconds, reading.baseline_p95_seconds
    if config.max_latency_ratio <= 0 or ours is None or theirs is None:
        return ""
    if reading.requests < config.latency_min_requests:
        return ""
    bound = theirs * config.max_latency_ratio + config.latency_slack_seconds
    if ours <= bound:
        return ""
    return (
        f"p95 latency on the same requests {ours * 1000:.0f} ms > {bound * 1000:.0f} ms "
        f"(baseline p95 {theirs * 1000:.0f} ms x {config.max_latency_ratio:g} + "
        f"{config.latency_slack_seconds * 1000:.0f} ms)"
    )
