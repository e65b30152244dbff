"""The promotion gate: does the challenger replace the champion?

Three rules, chosen by ``GateConfig.mode``:

* ``"gain_and_interval"`` (default): promote when the challenger's point gain
  AUC(challenger) - AUC(champion) is at least ``min_delta`` (the seed's bar) **and** the
  paired bootstrap shows it is really better (lower bound > 0), its checks passed, and no
  slice is shown to have lost more than ``slice_tolerance`` AUC. The lower bound is the
  one-sided ``level`` (95%) bound by default (``bound``): the whole 5% error budget is spent
  on the one error that promotes a model that is not better. On a 4,000-row holdout that
  promotes an equally good model under 5% of the time and a +0.01 better one over 80%
  (``benchmarks/simulate_promotion.py``); the two-sided interval's lower end (2.5% budget)
  stays below 80% power there.
* ``"interval"``: the interval's *lower* bound must be at least ``min_delta`` (plus the
  checks and slices). Much stricter: it rarely promotes a +0.01 gain on 4,000 rows.
* ``"point"``: the seed project's rule, kept for comparison: AUC(challenger) >=
  AUC(champion) + ``min_delta`` and the checks passed. It reads the point estimates only,
  so it promotes an equally good model often.

Every decision with a champion states the holdout's **minimum detectable gain**: the true
gain the rule promotes with probability ``power`` (80%), from the paired DeLong standard
error. When it is larger than the gains you expect, the holdout is too small to decide.

Losing the gate is a normal outcome, not an error: ``decide`` always returns a
``Decision`` with a sentence a person can read and the numbers behind it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from numpy.typing import ArrayLike

from churn_platform.core.metrics import (
    PairedComparison,
    detectable_gain,
    normal_quantile,
    paired_bootstrap_auc_delta,
)
from churn_platform.core.slices import SliceDelta

GateMode = Literal["gain_and_interval", "interval", "point"]
GATE_MODES: tuple[str, ...] = ("gain_and_interval", "interval", "point")
GateBound = Literal["one_sided", "two_sided"]
GATE_BOUNDS: tuple[str, ...] = ("one_sided", "two_sided")


@dataclass(frozen=True)
class GateConfig:
    """Parameters of the promotion gate; validated on construction.

    mode: "interval" (promote on the lower bound of the paired interval) or "point"
        (the seed's rule: the point estimate of the AUC difference).
    min_delta: required AUC gain (in interval mode, of the interval's lower bound).
    slice_tolerance: largest AUC loss allowed on any slice (interval mode).
    level: confidence level of the paired bootstrap interval.
    n_resamples: bootstrap resamples of the paired interval.
    seed: random seed of the bootstrap.
    """

    mode: GateMode = field(
        default="gain_and_interval",
        metadata={
            "description": "'gain_and_interval' (default): point gain >= min_delta and the "
            "interval's lower bound > 0; 'interval': lower bound >= min_delta; 'point': the "
            "seed's rule, point gain >= min_delta only."
        },
    )
    min_delta: float = field(
        default=0.005,
        metadata={
            "description": "Required AUC gain: of the point estimate ('gain_and_interval', "
            "'point') or of the interval's lower bound ('interval')."
        },
    )
    slice_tolerance: float = field(
        default=0.02,
        metadata={
            "description": "Largest AUC loss allowed on any slice ('gain_and_interval' and "
            "'interval'): a slice fails when the upper bound of its paired delta is below "
            "-slice_tolerance (the loss is shown, not just observed)."
        },
    )
    level: float = field(
        default=0.95,
        metadata={
            "description": "Confidence of each bound the gate reads (see 'bound'): 0.95 with "
            "'one_sided' is the one-sided 95% lower bound of the gain (5% error budget)."
        },
    )
    bound: GateBound = field(
        default="one_sided",
        metadata={
            "description": "'one_sided' (default): the lower bound of the gain is the one-sided "
            "'level' bound, the 1 - level quantile of the paired bootstrap (5% at 0.95); "
            "'two_sided': the lower end of the two-sided 'level' interval ((1 - level) / 2, "
            "2.5% at 0.95). Decided by benchmarks/simulate_promotion.py."
        },
    )
    n_resamples: int = field(default=1000, metadata={"description": "Paired bootstrap resamples."})
    seed: int = field(default=0, metadata={"description": "Seed of the bootstrap resampling."})
    power: float = field(
        default=0.8,
        metadata={
            "description": "Power at which the report states the holdout's minimum detectable "
            "gain (0.8: the gain this rule promotes 80% of the time on a holdout like this one)."
        },
    )

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise ValueError(f"mode must be one of {GATE_MODES}, got {self.mode!r}")
        if not math.isfinite(self.min_delta) or not -1.0 < self.min_delta < 1.0:
            raise ValueError(f"min_delta must be a finite AUC difference, got {self.min_delta}")
        if not math.isfinite(self.slice_tolerance) or not 0.0 <= self.slice_tolerance < 1.0:
            raise ValueError(f"slice_tolerance must be in [0, 1), got {self.slice_tolerance}")
        if not 0.5 < self.level < 1.0:
            raise ValueError(f"level must be in (0.5, 1), got {self.level}")
        if self.bound not in GATE_BOUNDS:
            raise ValueError(f"bound must be one of {GATE_BOUNDS}, got {self.bound!r}")
        if isinstance(self.n_resamples, bool) or not isinstance(self.n_resamples, int):
            raise ValueError(f"n_resamples must be an integer, got {self.n_resamples!r}")
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be >= 1, got {self.n_resamples}")
        if not 0.5 <= self.power < 1.0:
            raise ValueError(f"power must be in [0.5, 1), e.g. 0.8, got {self.power}")

    @property
    def error_budget(self) -> float:
        """The chance the gate's lower bound allows of being above the true gain: 1 - level
        one-sided (0.05 by default), half of it two-sided."""
        return (1.0 - self.level) * (1.0 if self.bound == "one_sided" else 0.5)

    @property
    def interval_level(self) -> float:
        """Level of the two-sided paired interval whose ends are the gate's bounds: the
        interval's lower end is the ``error_budget`` quantile (0.90 by default)."""
        # rounded so that 0.95 one-sided reads exactly the 0.90 interval's quantiles
        return round(1.0 - 2.0 * self.error_budget, 12)

    @property
    def bootstrap(self) -> tuple[int, float, int]:
        """(n_resamples, interval_level, seed): how every paired interval is drawn."""
        return self.n_resamples, self.interval_level, self.seed


def compare(
    y: ArrayLike, scores_challenger: ArrayLike, scores_champion: ArrayLike, config: GateConfig
) -> PairedComparison:
    """The paired comparison the gate reads: its ``delta_lower`` is the gate's lower bound
    (the ``config.error_budget`` quantile of the paired bootstrap deltas)."""
    n_resamples, level, seed = config.bootstrap
    return paired_bootstrap_auc_delta(
        y, scores_challenger, scores_champion, n_resamples=n_resamples, level=level, seed=seed
    )


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: promote or keep, why (a sentence), and the evidence.

    minimum_detectable_gain: the true AUC gain this rule promotes with probability
    ``GateConfig.power`` on a holdout like this one (from the paired DeLong variance);
    None without a champion. A gain well below it cannot be shown on this holdout.
    """

    promote: bool
    reason: str
    rule: str  # "no_champion", "gain_and_interval", "interval" or "point"
    details: dict[str, Any] = field(default_factory=dict)
    minimum_detectable_gain: float | None = None

    def power_text(self) -> str:
        """One sentence on what this holdout can detect ('' without a champion)."""
        mdg = self.minimum_detectable_gain
        if mdg is None:
            return ""
        power = self.details.get("power", 0.8)
        return (
            f"Minimum detectable gain: {_signed(mdg)} AUC at {power:.0%} power with this "
            f"holdout and rule; a smaller true gain is usually kept, so use a larger holdout "
            f"to tell smaller gains apart."
        )


def promotion_threshold(comparison: PairedComparison, config: GateConfig) -> float:
    """The smallest observed AUC delta the AUC part of ``config.mode`` accepts.

    With z the normal quantile at 1 - ``config.error_budget`` (1.645 by default, 1.96
    two-sided) and se the paired standard error: 'gain_and_interval' needs delta >= min_delta and delta > z * se; 'interval'
    needs delta - z * se >= min_delta; 'point' needs delta >= min_delta (the bootstrap
    interval is treated as normal here, which is what the simulation shows it is).
    """
    z = normal_quantile(1.0 - config.error_budget)
    se = comparison.delong_se
    if config.mode == "gain_and_interval":
        return max(config.min_delta, z * se)
    if config.mode == "interval":
        return config.min_delta + z * se
    return config.min_delta


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def decide(
    comparison: PairedComparison | None,
    checks_passed: bool,
    slice_deltas: Sequence[SliceDelta],
    config: GateConfig | None = None,
) -> Decision:
    """Promote or keep, per ``config.mode`` (see the module docstring).

    ``comparison`` is None when there is no champion: the challenger is promoted if its
    checks passed. ``slice_deltas`` are the challenger-minus-champion AUCs per slice with
    their paired intervals (``slices.paired_slice_deltas``); a slice fails only when its
    upper bound is below ``-slice_tolerance``, and one without a delta (too little
    evidence) is listed, never failed. Every keep names each
    reason, with the numbers; every decision with a champion states the minimum
    detectable gain of the holdout under the rule.
    """
    config = config or GateConfig()
    details: dict[str, Any] = {
        "mode": config.mode,
        "min_delta": config.min_delta,
        "slice_tolerance": config.slice_tolerance,
        "checks_passed": bool(checks_passed),
        "power": config.power,
    }
    if comparison is None:
        return _no_champion(checks_passed, details)

    details["comparison"] = asdict(comparison)
    mdg = detectable_gain(
        comparison.delong_se, promotion_threshold(comparison, config), config.power
    )
    details["minimum_detectable_gain"] = mdg
    reasons: list[str] = []
    if not checks_passed:
        reasons.append("the challenger failed its checks")
    auc_ok = _apply_auc_rule(comparison, config, details, reasons)
    if config.mode != "point":
        reasons.extend(_slice_reasons(slice_deltas, config, details))
    details["auc_rule_passed"] = bool(auc_ok)
    power = (
        f" The holdout ({comparison.n} rows) detects a gain of {_signed(mdg)} with "
        f"{config.power:.0%} power under this rule."
    )
    if reasons:
        return Decision(
            False,
            "Keep the champion: " + "; ".join(reasons) + "." + power,
            config.mode,
            details,
            mdg,
        )
    return Decision(True, _promote_reason(comparison, config) + power, config.mode, details, mdg)


def _no_champion(checks_passed: bool, details: dict[str, Any]) -> Decision:
    """The decision without a champion: promote the challenger if its checks passed."""
    details["champion"] = None
    if checks_passed:
        return Decision(
            True,
            "Promote: no champion yet, and the challenger passed its checks.",
            "no_champion",
            details,
        )
    return Decision(
        False,
        "Keep: there is no champion yet, but the challenger failed its checks, "
        "so nothing is promoted.",
        "no_champion",
        details,
    )


def _delta_texts(comparison: PairedComparison, config: GateConfig) -> tuple[str, str]:
    """The AUC delta and its bounds, as the reasons quote them: the ends of the interval
    are one-sided ``config.level`` bounds by default (``config.bound``)."""
    delta_text = (
        f"AUC {comparison.auc_challenger:.4f} vs champion {comparison.auc_champion:.4f}, "
        f"delta {_signed(comparison.delta)}"
    )
    lower, upper = _signed(comparison.delta_lower), _signed(comparison.delta_upper)
    if config.bound == "one_sided":
        return delta_text, f"one-sided {config.level:.0%} bounds {lower} and {upper}"
    return delta_text, f"{comparison.level:.0%} CI {lower} to {upper}"


def _apply_auc_rule(
    comparison: PairedComparison, config: GateConfig, details: dict[str, Any], reasons: list[str]
) -> bool:
    """Whether the AUC delta passes ``config.mode``'s rule; the rule goes into ``details``
    and, when it fails, why into ``reasons``."""
    delta_text, ci_text = _delta_texts(comparison, config)
    if config.mode == "point":
        auc_ok = comparison.delta >= config.min_delta
        details["auc_rule"] = "delta >= min_delta"
        details["slice_rule"] = "not applied in point mode (the seed's rule)"
        if not auc_ok:
            reasons.append(f"{delta_text}, below the required {_signed(config.min_delta)}")
        return auc_ok
    if config.mode == "interval":
        auc_ok = comparison.delta_lower >= config.min_delta
        details["auc_rule"] = "delta_lower >= min_delta"
        if not auc_ok:
            reasons.append(
                f"the gain is not established: {delta_text} ({ci_text}); the lower bound "
                f"is below the required {_signed(config.min_delta)}"
            )
        return auc_ok
    gain_ok = comparison.delta >= config.min_delta
    shown = comparison.delta_lower > 0
    details["auc_rule"] = "delta >= min_delta and delta_lower > 0"
    if not gain_ok:
        reasons.append(
            f"{delta_text} ({ci_text}), below the required gain {_signed(config.min_delta)}"
        )
    elif not shown:
        reasons.append(
            f"the gain is not shown to be real: {delta_text} ({ci_text}); the "
            "lower bound is not above 0"
        )
    return gain_ok and shown


def _slice_reasons(
    slice_deltas: Sequence[SliceDelta], config: GateConfig, details: dict[str, Any]
) -> list[str]:
    """The slice rule's reason to keep, if any slice is shown to have lost more than the
    tolerance."""
    regressed = _regressed_slices(slice_deltas, config, details)
    if not regressed:
        return []
    listed = ", ".join(
        f"{d.name} {_signed(d.delta or 0.0)} (upper bound {_signed(d.upper or 0.0)})"
        for d in sorted(regressed, key=lambda d: d.name)
    )
    return [
        f"{len(regressed)} slice(s) shown to lose more than {config.slice_tolerance:.3f} AUC "
        f"({listed})"
    ]


def _promote_reason(comparison: PairedComparison, config: GateConfig) -> str:
    """Why the challenger is promoted, in the words of ``config.mode``'s rule."""
    delta_text, ci_text = _delta_texts(comparison, config)
    if config.mode == "interval":
        return (
            f"Promote: {delta_text} ({ci_text}); the lower bound clears "
            f"{_signed(config.min_delta)}, checks passed and no slice is shown to lose more "
            f"than {config.slice_tolerance:.3f} AUC."
        )
    if config.mode == "gain_and_interval":
        return (
            f"Promote: {delta_text} reaches the required {_signed(config.min_delta)} and the "
            f"gain is shown ({ci_text}: the lower one is above 0); checks passed and no "
            f"slice is shown to lose more than {config.slice_tolerance:.3f} AUC."
        )
    return (
        f"Promote: {delta_text} reaches the required {_signed(config.min_delta)} and checks passed."
    )


def keep_unscored_champion(
    champion_version: str, problem: str, checks_passed: bool, config: GateConfig | None = None
) -> Decision:
    """Keep: the champion could not be scored on this holdout, so nothing is compared.

    Promoting without a comparison would replace a working model blindly; the reason
    names what is missing (e.g. a column of the champion's spec the data no longer has).
    """
    config = config or GateConfig()
    details: dict[str, Any] = {
        "mode": config.mode,
        "checks_passed": bool(checks_passed),
        "champion": champion_version,
        "champion_problem": problem,
    }
    return Decision(
        False,
        f"Keep the champion: champion v{champion_version} could not be scored on this "
        f"holdout ({problem}), so the challenger cannot be compared with it and is not "
        "promoted blindly.",
        "champion_unscored",
        details,
    )


def slice_failures(slice_deltas: Sequence[SliceDelta], config: GateConfig) -> list[SliceDelta]:
    """The slices the gate fails: those whose paired delta's upper bound is below
    ``-config.slice_tolerance``. A slice without a delta (not enough evidence) never fails."""
    return [d for d in slice_deltas if d.upper is not None and d.upper < -config.slice_tolerance]


def _regressed_slices(
    slice_deltas: Sequence[SliceDelta], config: GateConfig, details: dict[str, Any]
) -> list[SliceDelta]:
    """Slices whose paired delta's upper bound is below -tolerance (the evidence shows the
    loss); records the slice evidence in ``details``."""
    compared = [d for d in slice_deltas if d.delta is not None and d.upper is not None]
    regressed = slice_failures(compared, config)
    details["slice_rule"] = "delta_upper < -slice_tolerance fails a slice"
    details["slice_deltas"] = {d.name: d.delta for d in compared}
    details["slice_delta_upper"] = {d.name: d.upper for d in compared}
    details["regressed_slices"] = {d.name: d.delta for d in regressed}
    details["slices_not_compared"] = {
        d.name: d.skipped_reason or "no delta" for d in slice_deltas if d not in compared
    }
    return regressed
