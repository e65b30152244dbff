"""The promotion gate in simulation: how often each rule promotes when the truth is known.

Each trial draws a fresh holdout of ``n_rows`` labelled rows and the scores of two
correlated models on it, with *known* population AUCs, runs the real paired comparison
(``core.metrics.paired_bootstrap_auc_delta``) and the real gate (``core.gate.decide``)
under each rule, and counts promotions.

Score model (binormal, equal variance): score = mu * y + e, e ~ N(0, 1) within each
class, so the population AUC is exactly Phi(mu / sqrt(2)), i.e. mu = sqrt(2) *
Phi^-1(AUC). The two models' noises share a component: corr(e_challenger, e_champion) =
``rho`` in both classes.

One implementation for the gate's tests (``test_gate.py``) and the benchmark that
measures the error rates (``benchmarks/simulate_promotion.py``). Pure numpy/scipy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from churn_platform.core import gate, metrics

__all__ = ["DEFAULT_RULE", "RULES", "SimulationResult", "paired_scores", "simulate_rules"]

# name -> gate config factory (min_delta, n_resamples, seed filled per trial)
DEFAULT_RULE = "gain and interval (default): AUC_new >= AUC_old + min_delta and CI lower > 0"
RULES: dict[str, dict[str, Any]] = {
    DEFAULT_RULE: {"mode": "gain_and_interval"},
    "point (seed): AUC_new >= AUC_old + min_delta": {"mode": "point"},
    "interval: CI lower >= min_delta": {"mode": "interval"},
    "interval, min_delta=0: CI lower >= 0": {"mode": "interval", "min_delta": 0.0},
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
    shared = rng.standard_normal(n_rows)
    noise = rng.standard_normal((2, n_rows))
    e = math.sqrt(rho) * shared + math.sqrt(1.0 - rho) * noise
    mu_new = math.sqrt(2.0) * stats.norm.ppf(auc_challenger)
    mu_old = math.sqrt(2.0) * stats.norm.ppf(auc_champion)
    return y, mu_new * y + e[0], mu_old * y + e[1]


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
        cmp = metrics.paired_bootstrap_auc_delta(
            y, new, old, n_resamples=n_resamples, seed=seed * 100_003 + trial
        )
        se_sum += cmp.delong_se
        width_sum += cmp.delta_upper - cmp.delta_lower
        for name, overrides in RULES.items():
            params = {"min_delta": min_delta, "n_resamples": n_resamples, **overrides}
            decision = gate.decide(cmp, True, {}, gate.GateConfig(**params))
            promotions[name] += decision.promote
            if name == DEFAULT_RULE and decision.minimum_detectable_gain is not None:
                mdg_sum += decision.minimum_detectable_gain
    return SimulationResult(
        true_delta=true_delta,
        n_trials=n_trials,
        promotions=promotions,
        mean_delong_se=se_sum / n_trials,
        mean_ci_width=width_sum / n_trials,
        mean_detectable_gain=mdg_sum / n_trials,
        seconds=time.perf_counter() - start,
    )
