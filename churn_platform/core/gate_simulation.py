"""The promotion gate in simulation: how often each rule promotes when the truth is known.

Each trial draws a fresh holdout of ``n_rows`` labelled rows and the scores of two
correlated models on it, with *known* population AUCs, runs the real paired comparison
(``core.metrics.paired_bootstrap_auc_delta``) and the real gate (``core.gate.decide``)
under each rule, and counts promotions.

Score model (binormal, equal variance): score = mu * y + e, e ~ N(0, 1) within each
class, so the population AUC is exactly Phi(mu / sqrt(2)), i.e. mu = sqrt(2) *
Phi^-1(AUC). The two models' noises share a component: corr(e_challenger, e_champion) =
``rho`` in both classes.

``simulate_slices`` does the same for one evaluation slice: the model check's floor rule
(the slice AUC interval's upper bound below ``min_slice_auc``) and the gate's slice rule
(the paired slice delta's upper bound below ``-slice_tolerance``), each beside the point
rule it replaced.

One implementation for the gate's tests (``test_gate.py``) and the benchmarks that
measure the error rates (``benchmarks/simulate_promotion.py``,
``benchmarks/simulate_slices.py``). Pure numpy/scipy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from churn_platform.core import gate, metrics, slices

__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "SLICE_RULES",
    "SimulationResult",
    "SliceSimulationResult",
    "paired_scores",
    "simulate_rules",
    "simulate_slices",
]

# name -> gate config overrides (min_delta, n_resamples, seed filled per trial)
DEFAULT_RULE = (
    "gain and one-sided bound (default): AUC_new >= AUC_old + min_delta and one-sided 95% "
    "lower bound > 0"
)
TWO_SIDED_RULE = (
    "gain and two-sided interval (earlier default): AUC_new >= AUC_old + min_delta and "
    "95% CI lower > 0"
)
RULES: dict[str, dict[str, Any]] = {
    DEFAULT_RULE: {"mode": "gain_and_interval", "bound": "one_sided"},
    TWO_SIDED_RULE: {"mode": "gain_and_interval", "bound": "two_sided"},
    "point (seed): AUC_new >= AUC_old + min_delta": {"mode": "point"},
    "interval: 95% CI lower >= min_delta": {"mode": "interval", "bound": "two_sided"},
}


def paired_scores(
    n_rows: int,
    auc_challenger: float,
    auc_champion: float,
    rho: float,
    prevalence: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and (challenger, champion) scores with known population AUCs.

    Binormal equal-variance model; the two score noises correlate ``rho`` within class.
    """
    if not 0.5 <= auc_champion < 1 or not 0.5 <= auc_challenger < 1:
        raise ValueError(
            f"AUCs must be in [0.5, 1), got challenger {auc_challenger}, champion {auc_champion}"
        )
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must be in [0, 1), got {rho}")
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    y = (rng.random(n_rows) < prevalence).astype(np.int8)
    new, old = scores_for_labels(y, auc_challenger, auc_champion, rho, rng)
    return y, new, old


def scores_for_labels(
    y: np.ndarray, auc_challenger: float, auc_champion: float, rho: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(challenger, champion) binormal scores of the rows labelled ``y`` (see
    ``paired_scores``)."""
    n_rows = y.size
    shared = rng.standard_normal(n_rows)
    noise = rng.standard_normal((2, n_rows))
    e = math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * noise
    mu_new = math.sqrt(2.0) * stats.norm.ppf(auc_challenger)
    mu_old = math.sqrt(2.0) * stats.norm.ppf(auc_champion)
    return mu_new * y + e[0], mu_old * y + e[1]


@dataclass
class SimulationResult:
    """Promotion rate per rule for one scenario (true AUC delta)."""

    true_delta: float
    n_trials: int
    promotions: dict[str, int]
    mean_delong_se: float
    mean_ci_width: float
    mean_detectable_gain: float  # the default rule's minimum detectable gain at 80% power
    seconds: float
    rates: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.rates = {k: v / self.n_trials for k, v in self.promotions.items()}


def simulate_rules(
    n_trials: int = 300,
    true_delta: float = 0.0,
    n_rows: int = 4_000,
    base_auc: float = 0.85,
    rho: float = 0.9,
    prevalence: float = 0.21,
    min_delta: float = 0.005,
    n_resamples: int = 1_000,
    seed: int = 0,
) -> SimulationResult:
    """Run ``n_trials`` gate decisions per rule when the challenger is truly better by
    ``true_delta`` AUC (0: equally good, so every promotion is a false promotion).

    Checks pass and no slices are given, so only the AUC part of each rule is exercised.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    rng = np.random.default_rng(seed)
    promotions = dict.fromkeys(RULES, 0)
    se_sum = width_sum = mdg_sum = 0.0
    start = time.perf_counter()
    for trial in range(n_trials):
        y, new, old = paired_scores(n_rows, base_auc + true_delta, base_auc, rho, prevalence, rng)
        # one bootstrap seed per trial: the rules read quantiles of the same resamples
        by_level: dict[float, Any] = {}
        for name, overrides in RULES.items():
            params = {"min_delta": min_delta, "n_resamples": n_resamples, **overrides}
            config = gate.GateConfig(**params, seed=seed * 100_003 + trial)
            if config.interval_level not in by_level:
                by_level[config.interval_level] = gate.compare(y, new, old, config)
            cmp = by_level[config.interval_level]
            decision = gate.decide(cmp, True, [], config)
            promotions[name] += decision.promote
            if name == DEFAULT_RULE:
                se_sum += cmp.delong_se
                width_sum += cmp.delta_upper - cmp.delta_lower
                mdg_sum += decision.minimum_detectable_gain or 0.0
    return SimulationResult(
        true_delta=true_delta,
        n_trials=n_trials,
        promotions=promotions,
        mean_delong_se=se_sum / n_trials,
        mean_ci_width=width_sum / n_trials,
        mean_detectable_gain=mdg_sum / n_trials,
        seconds=time.perf_counter() - start,
    )


SLICE_RULES: dict[str, str] = {
    "check, interval (default): slice AUC 95% CI upper < floor": "check_interval",
    "check, point (earlier): slice AUC < floor": "check_point",
    "gate, interval (default): one-sided 95% upper bound of the delta < -tolerance": (
        "gate_interval"
    ),
    "gate, point (earlier): delta < -tolerance": "gate_point",
}


@dataclass
class SliceSimulationResult:
    """Failure rate per slice rule for one scenario (slice size and true slice AUCs)."""

    n_pos: int
    n_neg: int
    auc_challenger: float
    auc_champion: float
    n_trials: int
    failures: dict[str, int]
    not_enough_evidence: int
    seconds: float
    rates: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.rates = {k: v / self.n_trials for k, v in self.failures.items()}


def simulate_slices(
    n_trials: int = 300,
    n_pos: int = 38,
    n_neg: int = 150,
    auc_challenger: float = 0.80,
    auc_champion: float = 0.80,
    floor: float = 0.74,
    rho: float = 0.9,
    gate_config: gate.GateConfig | None = None,
    check_level: float = 0.95,
    min_per_class: int = slices.MIN_SLICE_CLASS_ROWS,
    seed: int = 0,
) -> SliceSimulationResult:
    """Run ``n_trials`` slice judgements on a fresh slice of ``n_pos`` churners and ``n_neg``
    non-churners whose true AUCs are known: the check's floor rule on the challenger
    (fails when the slice AUC interval's upper bound is below ``floor``) and the gate's
    slice rule (fails when the paired delta's upper bound is below -tolerance), each beside
    the point rule it replaced. A slice under ``min_per_class`` is "not enough evidence" and
    fails no interval rule. Every failure is a false one when the truth is at or above the
    floor (check) or the models are equal (gate).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    config = gate_config or gate.GateConfig()
    rng = np.random.default_rng(seed)
    failures = dict.fromkeys(SLICE_RULES, 0)
    not_enough = 0
    y = np.r_[np.ones(n_pos, dtype=np.int8), np.zeros(n_neg, dtype=np.int8)]
    mask = {"slice": np.ones(y.size, dtype=bool)}
    start = time.perf_counter()
    for trial in range(n_trials):
        new, old = scores_for_labels(y, auc_challenger, auc_champion, rho, rng)
        trial_seed = seed * 100_003 + trial
        (check,) = slices.slice_aucs(
            (y, new), mask, 1, min_per_class=min_per_class,
            interval=(config.n_resamples, check_level, trial_seed),
        )  # fmt: skip
        (delta,) = slices.paired_slice_deltas(
            y, new, old, mask, (config.n_resamples, config.interval_level, trial_seed), 1,
            min_per_class,
        )  # fmt: skip
        point = metrics.auc(y, new)
        point_delta = point - metrics.auc(y, old)
        not_enough += check.auc is None
        verdicts = {
            "check_interval": check.upper is not None and check.upper < floor,
            "check_point": point < floor,
            "gate_interval": bool(gate.slice_failures([delta], config)),
            "gate_point": point_delta < -config.slice_tolerance,
        }
        for name, key in SLICE_RULES.items():
            failures[name] += verdicts[key]
    return SliceSimulationResult(
        n_pos=n_pos,
        n_neg=n_neg,
        auc_challenger=auc_challenger,
        auc_champion=auc_champion,
        n_trials=n_trials,
        failures=failures,
        not_enough_evidence=not_enough,
        seconds=time.perf_counter() - start,
    )
