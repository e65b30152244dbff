"""The promotion gate: does the challenger replace the champion?

Two rules, chosen by ``GateConfig.mode``:

* ``"interval"`` (default): promote only when the *lower* bound of the paired bootstrap
  interval of AUC(challenger) - AUC(champion) is at least ``min_delta``, the challenger's
  checks passed, and no slice lost more than ``slice_tolerance`` AUC. A challenger that
  is merely "not worse" or "better by noise" keeps the champion.
* ``"point"``: the seed project's rule, kept for comparison: promote when
  AUC(challenger) >= AUC(champion) + ``min_delta`` and the checks passed. It reads the
  point estimates only, so on a 4,000-row holdout it promotes an equally good model
  often (see ``benchmarks/simulate_promotion.py``).

Losing the gate is a normal outcome, not an error: ``decide`` always returns a
``Decision`` with a sentence a person can read and the numbers behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from churn_platform.core.metrics import PairedComparison, SliceResult

GateMode = Literal["interval", "point"]
GATE_MODES: tuple[str, ...] = ("interval", "point")


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

    mode: GateMode = "interval"
    min_delta: float = 0.005  # required AUC gain (interval: of the CI lower bound)
    slice_tolerance: float = 0.02  # largest AUC loss allowed on any slice (interval mode)
    level: float = 0.95  # confidence level of the paired bootstrap interval
    n_resamples: int = 1000
    seed: int = 0

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


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: promote or keep, why (a sentence), and the evidence."""

    promote: bool
    reason: str
    rule: str  # "no_champion", "interval" or "point"
    details: dict[str, Any] = field(default_factory=dict)


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
    reason, with the numbers.
    """
    config = config or GateConfig()
    details: dict[str, Any] = {
        "mode": config.mode,
        "min_delta": config.min_delta,
        "slice_tolerance": config.slice_tolerance,
        "checks_passed": bool(checks_passed),
    }
    if comparison is None:
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

    details["comparison"] = asdict(comparison)
    reasons: list[str] = []
    if not checks_passed:
        reasons.append("the challenger failed its checks")

    delta_text = (
        f"AUC {comparison.auc_challenger:.4f} vs champion {comparison.auc_champion:.4f}, "
        f"delta {_signed(comparison.delta)}"
    )
    ci_text = (
        f"{comparison.level:.0%} CI {_signed(comparison.delta_lower)} to "
        f"{_signed(comparison.delta_upper)}"
    )
    if config.mode == "interval":
        auc_ok = comparison.delta_lower >= config.min_delta
        details["auc_rule"] = "delta_lower >= min_delta"
        if not auc_ok:
            reasons.append(
                f"the gain is not established: {delta_text} ({ci_text}); the lower bound "
                f"is below the required {_signed(config.min_delta)}"
            )
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
        if regressed:
            listed = ", ".join(f"{n} {_signed(d)}" for n, d in sorted(regressed.items()))
            reasons.append(
                f"{len(regressed)} slice(s) lost more than {config.slice_tolerance:.3f} AUC "
                f"({listed})"
            )
    else:
        auc_ok = comparison.delta >= config.min_delta
        details["auc_rule"] = "delta >= min_delta"
        details["slice_rule"] = "not applied in point mode (the seed's rule)"
        if not auc_ok:
            reasons.append(f"{delta_text}, below the required {_signed(config.min_delta)}")

    details["auc_rule_passed"] = bool(auc_ok)
    if reasons:
        return Decision(
            False, "Keep the champion: " + "; ".join(reasons) + ".", config.mode, details
        )
    if config.mode == "interval":
        reason = (
            f"Promote: {delta_text} ({ci_text}); the lower bound clears "
            f"{_signed(config.min_delta)}, checks passed and no slice lost more than "
            f"{config.slice_tolerance:.3f} AUC."
        )
    else:
        reason = (
            f"Promote: {delta_text} reaches the required {_signed(config.min_delta)} "
            "and checks passed."
        )
    return Decision(True, reason, config.mode, details)
