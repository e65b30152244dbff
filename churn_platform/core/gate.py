"""The promotion gate: does the challenger replace the champion?

Three rules, chosen by ``GateConfig.mode``:

* ``"gain_and_interval"`` (default): promote when the challenger's point gain
  AUC(challenger) - AUC(champion) is at least ``min_delta`` (the seed's bar) **and** the
  paired bootstrap interval shows it is really better (lower bound > 0), its checks
  passed, and no slice lost more than ``slice_tolerance`` AUC. On a 4,000-row holdout it
  promotes an equally good model about 1-2% of the time and a +0.01 better one over 80%
  (``benchmarks/simulate_promotion.py``).
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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from churn_platform.core.metrics import (
    PairedComparison,
    SliceResult,
    detectable_gain,
    normal_quantile,
)

GateMode = Literal["gain_and_interval", "interval", "point"]
GATE_MODES: tuple[str, ...] = ("gain_and_interval", "interval", "point")


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
            "'interval')."
        },
    )
    level: float = field(
        default=0.95,
        metadata={"description": "Confidence level of the paired bootstrap interval."},
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
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if isinstance(self.n_resamples, bool) or not isinstance(self.n_resamples, int):
            raise ValueError(f"n_resamples must be an integer, got {self.n_resamples!r}")
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be >= 1, got {self.n_resamples}")
        if not 0.5 <= self.power < 1.0:
            raise ValueError(f"power must be in [0.5, 1), e.g. 0.8, got {self.power}")


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

    With z the two-sided normal quantile of ``config.level`` and se the paired standard
    error: 'gain_and_interval' needs delta >= min_delta and delta > z * se; 'interval'
    needs delta - z * se >= min_delta; 'point' needs delta >= min_delta (the bootstrap
    interval is treated as normal here, which is what the simulation shows it is).
    """
    z = normal_quantile(0.5 + config.level / 2)
    se = comparison.delong_se
    if config.mode == "gain_and_interval":
        return max(config.min_delta, z * se)
    if config.mode == "interval":
        return config.min_delta + z * se
    return config.min_delta


def slice_auc_deltas(
    challenger: Sequence[SliceResult], champion: Sequence[SliceResult]
) -> dict[str, float | None]:
    """Per slice name, challenger AUC minus champion AUC; None where either is missing.

    Slices are matched by name; a slice present in only one list maps to None.
    """
    new = {r.name: r.auc for r in challenger}
    old = {r.name: r.auc for r in champion}
    out: dict[str, float | None] = {}
    for name in [*new, *(n for n in old if n not in new)]:
        a, b = new.get(name), old.get(name)
        out[name] = None if a is None or b is None else float(a - b)
    return out


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def decide(
    comparison: PairedComparison | None,
    checks_passed: bool,
    slice_deltas: Mapping[str, float | None],
    config: GateConfig | None = None,
) -> Decision:
    """Promote or keep, per ``config.mode`` (see the module docstring).

    ``comparison`` is None when there is no champion: the challenger is promoted if its
    checks passed. ``slice_deltas`` maps slice name to challenger AUC minus champion AUC
    (None: not computed on that slice, ignored but listed). Every keep names each
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


def _delta_texts(comparison: PairedComparison) -> tuple[str, str]:
    """The AUC delta and its confidence interval, as the reasons quote them."""
    delta_text = (
        f"AUC {comparison.auc_challenger:.4f} vs champion {comparison.auc_champion:.4f}, "
        f"delta {_signed(comparison.delta)}"
    )
    ci_text = (
        f"{comparison.level:.0%} CI {_signed(comparison.delta_lower)} to "
        f"{_signed(comparison.delta_upper)}"
    )
    return delta_text, ci_text


def _apply_auc_rule(
    comparison: PairedComparison, config: GateConfig, details: dict[str, Any], reasons: list[str]
) -> bool:
    """Whether the AUC delta passes ``config.mode``'s rule; the rule goes into ``details``
    and, when it fails, why into ``reasons``."""
    delta_text, ci_text = _delta_texts(comparison)
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
            "interval's lower bound is not above 0"
        )
    return gain_ok and shown


def _slice_reasons(
    slice_deltas: Mapping[str, float | None], config: GateConfig, details: dict[str, Any]
) -> list[str]:
    """The slice rule's reason to keep, if any slice lost more than the tolerance."""
    regressed = _regressed_slices(slice_deltas, config, details)
    if not regressed:
        return []
    listed = ", ".join(f"{n} {_signed(d)}" for n, d in sorted(regressed.items()))
    return [f"{len(regressed)} slice(s) lost more than {config.slice_tolerance:.3f} AUC ({listed})"]


def _promote_reason(comparison: PairedComparison, config: GateConfig) -> str:
    """Why the challenger is promoted, in the words of ``config.mode``'s rule."""
    delta_text, ci_text = _delta_texts(comparison)
    if config.mode == "interval":
        return (
            f"Promote: {delta_text} ({ci_text}); the lower bound clears "
            f"{_signed(config.min_delta)}, checks passed and no slice lost more than "
            f"{config.slice_tolerance:.3f} AUC."
        )
    if config.mode == "gain_and_interval":
        return (
            f"Promote: {delta_text} reaches the required {_signed(config.min_delta)} and the "
            f"{ci_text} excludes 0; checks passed and no slice lost more than "
            f"{config.slice_tolerance:.3f} AUC."
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


def _regressed_slices(
    slice_deltas: Mapping[str, float | None], config: GateConfig, details: dict[str, Any]
) -> dict[str, float]:
    """Slices that lost more than the tolerance; records the slice evidence in ``details``."""
    # None or NaN (a frame's empty cell) means the slice had no AUC on one side
    deltas = {
        name: None if d is None or not math.isfinite(d) else float(d)
        for name, d in slice_deltas.items()
    }
    regressed = {
        name: d for name, d in deltas.items() if d is not None and d < -config.slice_tolerance
    }
    details["slice_deltas"] = deltas
    details["regressed_slices"] = regressed
    details["slices_not_compared"] = [n for n, d in deltas.items() if d is None]
    return regressed
