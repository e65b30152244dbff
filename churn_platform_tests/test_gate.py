"""The promotion gate: decisions, reasons, and its error rates in simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churn_platform.core import gate, gate_simulation, metrics
from churn_platform.core.metrics import PairedComparison
from churn_platform.core.slices import SliceDelta


def comparison(
    delta: float, lower: float, upper: float, champion: float = 0.85
) -> PairedComparison:
    """A hand-made comparison (the gate reads only these numbers)."""
    return PairedComparison(
        auc_challenger=champion + delta,
        auc_champion=champion,
        delta=delta,
        delta_lower=lower,
        delta_upper=upper,
        level=0.95,
        delong_z=delta / 0.004,
        delong_p_value=0.5,
        delong_variance=0.004**2,
        delong_se=0.004,
        n=4000,
        n_pos=840,
        n_resamples=1000,
        n_skipped=0,
    )


def sd(name: str, delta: float, upper: float) -> SliceDelta:
    """A hand-made slice delta with the upper bound of its paired interval."""
    return SliceDelta(name, 200, 40, delta, delta - (upper - delta), upper)


def thin(name: str) -> SliceDelta:
    """A slice with too few churners to be compared."""
    return SliceDelta(name, 60, 4, None, skipped_reason="not enough evidence: 4 churners")


def scored_models(true_delta: float, seed: int):
    sim = gate_simulation
    rng = np.random.default_rng(seed)
    return sim.paired_scores(4_000, 0.85 + true_delta, 0.85, 0.9, 0.21, rng)


# ---------------------------------------------------------------------------------------
# decisions on real comparisons


def test_equal_models_keep_the_champion():
    y, _, old = scored_models(0.0, seed=1)
    cmp = metrics.paired_bootstrap_auc_delta(y, old, old)
    decision = gate.decide(cmp, True, [], gate.GateConfig())
    assert not decision.promote
    assert decision.rule == "gain_and_interval"
    assert "below the required gain +0.0050" in decision.reason and "+0.0000" in decision.reason


def test_clearly_better_challenger_is_promoted():
    y, new, old = scored_models(0.04, seed=2)
    cmp = metrics.paired_bootstrap_auc_delta(y, new, old)
    assert cmp.delta_lower > 0.005  # the premise: the data show a clear gain
    decision = gate.decide(cmp, True, [sd("enterprise", 0.01, 0.03), thin("tenure:24m+")])
    assert decision.promote
    assert decision.reason.startswith("Promote:")
    assert f"{cmp.delta:+.4f}" in decision.reason
    assert list(decision.details["slices_not_compared"]) == ["tenure:24m+"]
    json.dumps(decision.details)  # metadata-ready


# ---------------------------------------------------------------------------------------
# decisions on hand-made comparisons


def test_failed_checks_keep_with_that_reason_even_when_better():
    decision = gate.decide(comparison(0.03, 0.02, 0.04), False, {})
    assert not decision.promote
    assert "failed its checks" in decision.reason
    assert "lower bound" not in decision.reason  # the AUC part passed: only the real reason


def test_slice_regression_keeps_and_names_the_slice():
    deltas = [
        sd("enterprise", -0.035, -0.025),  # shown: the upper bound is below -0.02
        sd("contract:annual", -0.01, 0.0),  # within the 0.02 tolerance
        sd("tenure:24m+", -0.06, 0.01),  # a point loss past the tolerance, but not shown
        thin("tenure:0-12m"),
    ]
    decision = gate.decide(comparison(0.03, 0.02, 0.04), True, deltas)
    assert not decision.promote
    assert "enterprise -0.0350 (upper bound -0.0250)" in decision.reason
    assert "contract:annual" not in decision.reason and "tenure" not in decision.reason
    assert decision.details["regressed_slices"] == {"enterprise": -0.035}
    assert decision.details["slices_not_compared"] == {"tenure:0-12m": thin("x").skipped_reason}


def test_a_point_loss_the_interval_does_not_show_does_not_keep_the_champion():
    # issue 26.7: a small slice's point delta moved past the tolerance by noise
    decision = gate.decide(comparison(0.03, 0.02, 0.04), True, [sd("enterprise", -0.05, 0.02)])
    assert decision.promote
    assert decision.details["slice_delta_upper"] == {"enterprise": 0.02}


@pytest.mark.parametrize(
    ("delta", "lower", "expected", "why"),
    [
        (0.010, 0.001, True, ""),  # issue 13.1: the interval rule kept this (lower < 0.005)
        (0.010, 0.0, False, "lower bound is not above 0"),
        (0.0049, 0.001, False, "below the required gain +0.0050"),
        (0.005, 0.0001, True, ""),
    ],
)
def test_default_rule_needs_the_seeds_gain_and_an_interval_above_zero(delta, lower, expected, why):
    decision = gate.decide(comparison(delta, lower, delta + 0.01), True, [])
    assert decision.rule == "gain_and_interval"
    assert decision.promote is expected
    assert why in decision.reason


def test_every_decision_states_the_minimum_detectable_gain():
    # se 0.004: the default rule needs an observed delta >= max(0.005, 1.645 se) = 0.00658
    # (one-sided 95%), reached with 80% power by a true gain of 0.00658 + 0.8416 se = 0.00995
    decision = gate.decide(comparison(0.002, -0.006, 0.01), True, [])
    assert decision.minimum_detectable_gain == pytest.approx(0.00995, abs=1e-5)
    assert "detects a gain of +0.0099 with 80% power" in decision.reason
    assert "+0.0099" in decision.power_text()
    assert decision.details["minimum_detectable_gain"] == decision.minimum_detectable_gain
    interval = gate.decide(
        comparison(0.002, -0.006, 0.01),
        True,
        [],
        gate.GateConfig(mode="interval", bound="two_sided"),
    )
    assert interval.minimum_detectable_gain == pytest.approx(0.005 + 2.8015 * 0.004, abs=1e-5)
    assert gate.decide(None, True, []).minimum_detectable_gain is None


def test_the_default_bound_is_the_one_sided_95_percent_lower_bound():
    # issue 26.6: the whole 5% error budget goes to the one error that promotes wrongly
    cfg = gate.GateConfig()
    assert (cfg.bound, cfg.level, cfg.error_budget) == ("one_sided", 0.95, pytest.approx(0.05))
    y, new, old = scored_models(0.008, seed=7)
    cmp = gate.compare(y, new, old, cfg)
    one_sided = metrics.paired_bootstrap_auc_delta(y, new, old, level=0.90)
    two_sided = metrics.paired_bootstrap_auc_delta(y, new, old, level=0.95)
    # the gate's lower bound is the 5% quantile of the paired bootstrap deltas, not the 2.5%
    assert cmp.delta_lower == one_sided.delta_lower > two_sided.delta_lower
    between = comparison(0.008, 0.001, 0.015)  # above 0 one-sided, as if below 0 two-sided
    assert gate.decide(between, True, [], cfg).promote
    assert "one-sided 95% bounds +0.0010 and +0.0150" in gate.decide(between, True, []).reason
    two = gate.GateConfig(bound="two_sided")
    assert two.error_budget == pytest.approx(0.025) and two.interval_level == pytest.approx(0.95)


def test_minimum_detectable_gain_matches_the_simulated_power():
    sim = gate_simulation
    at_mdg = sim.simulate_rules(n_trials=1, true_delta=0.0, n_resamples=50, seed=3)
    mdg = round(at_mdg.mean_detectable_gain, 3)
    res = sim.simulate_rules(n_trials=80, true_delta=mdg, n_resamples=200, seed=4)
    # 80% power by construction; 80 trials put the rate within about +-0.1 of it
    assert 0.65 <= res.rates[sim.DEFAULT_RULE] <= 0.95


def test_every_failing_part_is_listed():
    decision = gate.decide(
        comparison(0.001, -0.004, 0.006), False, [sd("enterprise", -0.05, -0.03)]
    )
    assert not decision.promote
    for part in ("failed its checks", "below the required gain", "enterprise -0.0500"):
        assert part in decision.reason


def test_interval_boundary_is_inclusive():
    cfg = gate.GateConfig(mode="interval", min_delta=0.005)
    assert gate.decide(comparison(0.012, 0.005, 0.02), True, [], cfg).promote
    assert not gate.decide(comparison(0.012, 0.0049, 0.02), True, [], cfg).promote


@pytest.mark.parametrize(
    ("delta", "lower", "expected"),
    [(0.006, -0.003, True), (0.005, -0.01, True), (0.0049, 0.004, False), (0.02, 0.01, True)],
)
def test_point_mode_behaves_like_the_seed(delta, lower, expected):
    cfg = gate.GateConfig(mode="point", min_delta=0.005)
    decision = gate.decide(comparison(delta, lower, delta + 0.01), True, [sd("x", -0.5, -0.4)], cfg)
    # the seed's rule: AUC_new >= AUC_old + min_delta; the interval and slices are not read
    assert decision.promote is expected
    assert decision.rule == "point"
    if not expected:
        assert "below the required +0.0050" in decision.reason


def test_point_mode_still_requires_checks():
    cfg = gate.GateConfig(mode="point")
    assert not gate.decide(comparison(0.05, 0.04, 0.06), False, [], cfg).promote


def test_no_champion_promotes_when_checks_pass():
    yes = gate.decide(None, True, [])
    no = gate.decide(None, False, [])
    assert yes.promote and "no champion yet" in yes.reason and yes.rule == "no_champion"
    assert not no.promote and "failed its checks" in no.reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "median"}, "mode must be one of"),
        ({"min_delta": float("nan")}, "min_delta"),
        ({"slice_tolerance": -0.1}, "slice_tolerance"),
        ({"level": 0.0}, "level"),
        ({"bound": "both"}, "bound must be one of"),
        ({"n_resamples": 0}, "n_resamples"),
    ],
)
def test_gate_config_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gate.GateConfig(**kwargs)


def test_slice_failures_read_the_upper_bound_and_never_fail_a_thin_slice():
    cfg = gate.GateConfig(slice_tolerance=0.02)
    deltas = [sd("a", -0.05, -0.021), sd("b", -0.05, -0.02), sd("c", -0.3, 0.0), thin("d")]
    assert [d.name for d in gate.slice_failures(deltas, cfg)] == ["a"]


# ---------------------------------------------------------------------------------------
# error rates (the reason the interval rule exists)


def test_default_rule_rarely_promotes_an_equal_model_and_point_rule_often_does():
    sim = gate_simulation
    # rho 0.8: two somewhat less similar models than the benchmark's default 0.9
    res = sim.simulate_rules(n_trials=100, true_delta=0.0, rho=0.8, n_resamples=200, seed=5)
    point = res.rates["point (seed): AUC_new >= AUC_old + min_delta"]
    default = res.rates[sim.DEFAULT_RULE]
    assert default <= 0.10
    assert point >= default + 0.05


def test_default_rule_has_power_on_a_plus_0_01_gain_where_the_interval_rule_has_little():
    # issue 13.1: on 4,000 rows the interval rule promoted a real +0.01 gain 29% of the time
    sim = gate_simulation
    res = sim.simulate_rules(n_trials=80, true_delta=0.01, n_resamples=200, seed=6)
    assert res.rates[sim.DEFAULT_RULE] >= 0.7
    assert res.rates["interval: 95% CI lower >= min_delta"] <= 0.5


def test_simulated_scores_have_the_requested_auc():
    sim = gate_simulation
    y, new, old = sim.paired_scores(200_000, 0.87, 0.85, 0.9, 0.21, np.random.default_rng(0))
    assert metrics.auc(y, new) == pytest.approx(0.87, abs=0.003)
    assert metrics.auc(y, old) == pytest.approx(0.85, abs=0.003)
    within = np.corrcoef(new[y == 0], old[y == 0])[0, 1]
    assert within == pytest.approx(0.9, abs=0.01)


def test_slice_interval_rules_fail_equal_models_rarely_and_catch_a_real_loss():
    # issue 26.7: a 38-churner slice, as in the public telco table
    sim = gate_simulation
    cfg = gate.GateConfig(n_resamples=200)
    rules = list(sim.SLICE_RULES)
    check_interval, check_point, gate_interval, gate_point = rules
    equal = sim.simulate_slices(n_trials=40, n_pos=38, n_neg=150, gate_config=cfg, seed=8)
    assert equal.rates[gate_interval] <= 0.1 and equal.rates[check_interval] <= 0.1
    assert equal.rates[gate_point] >= equal.rates[gate_interval]
    loss = sim.simulate_slices(
        n_trials=40, n_pos=38, n_neg=150, auc_challenger=0.64, auc_champion=0.80,
        gate_config=cfg, seed=9,
    )  # fmt: skip
    assert loss.rates[gate_interval] >= 0.8 and loss.rates[check_interval] >= 0.5
    assert loss.rates[check_point] == 1.0 or loss.rates[check_point] >= 0.9


def test_a_thin_slice_is_not_enough_evidence_and_never_fails():
    sim = gate_simulation
    res = sim.simulate_slices(
        n_trials=10, n_pos=5, n_neg=100, auc_challenger=0.55, auc_champion=0.9,
        gate_config=gate.GateConfig(n_resamples=50), seed=10,
    )  # fmt: skip
    assert res.not_enough_evidence == 10
    interval_rules = [n for n in sim.SLICE_RULES if "interval" in n]
    assert all(res.failures[n] == 0 for n in interval_rules)
