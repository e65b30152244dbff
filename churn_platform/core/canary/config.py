"""How a canary rollout proceeds and when it is judged bad: ``CanaryConfig`` and its validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

AnalysisMode = Literal["sequential", "count"]
ANALYSIS_MODES: tuple[str, ...] = ("sequential", "count")
SchemaChangeMode = Literal["refuse", "cutover"]
SCHEMA_CHANGE_MODES: tuple[str, ...] = ("refuse", "cutover")


@dataclass(frozen=True)
class CanaryConfig:
    """How a canary rollout proceeds and when it is judged bad (see the module docstring)."""

    steps: tuple[int, ...] = field(
        default=(5, 25, 100),
        metadata={
            "description": "Candidate traffic percent at each step, strictly increasing, "
            "ending at 100."
        },
    )
    analysis_window_seconds: float = field(
        default=90.0,
        metadata={
            "description": "Longest time a step is observed. 'sequential': a step ends as soon "
            "as the test decides; undecided at this time -> abort with the counts. 'count': "
            "the fixed window (and metrics look-back) of every step."
        },
    )
    interval_seconds: float = field(
        default=1.0, metadata={"description": "Time between metric readings inside a step."}
    )
    max_error_rate: float = field(
        default=0.05,
        metadata={
            "description": "The error-rate bound (share of requests failed by the server: 5xx "
            "or not reachable through the router; 4xx excluded). 0.05 = 5%."
        },
    )
    analysis: AnalysisMode = field(
        default="sequential",
        metadata={
            "description": "'sequential' (default): a sequential probability ratio test on "
            "the candidate's counts at each step; 'count': the earlier rule, a reading above "
            "max_error_rate with breach_min_requests requests rolls back, a window end with "
            "min_requests passes."
        },
    )
    sprt_ratio: float = field(
        default=2.0,
        metadata={
            "description": "The sequential test weighs 'rate = max_error_rate / ratio' "
            "(healthy) against 'rate = max_error_rate * ratio' (bad): the band around the "
            "bound where it takes its time."
        },
    )
    false_rollback_rate: float = field(
        default=0.01,
        metadata={
            "description": "Sequential test: chance per step of rolling back a candidate "
            "whose true rate is max_error_rate / sprt_ratio (far less for a healthier one)."
        },
    )
    missed_breach_rate: float = field(
        default=0.05,
        metadata={
            "description": "Sequential test: chance per step of advancing a candidate whose "
            "true rate is max_error_rate * sprt_ratio."
        },
    )
    baseline_z: float = field(
        default=2.33,
        metadata={
            "description": "A breaching candidate is blamed only when its rate is above the "
            "baseline's by this many standard errors (two-proportion z); otherwise the "
            "baseline fails as much (a shared dependency) and the release aborts."
        },
    )
    max_latency_ratio: float = field(
        default=2.0,
        metadata={
            "description": "Latency bound: candidate p95 <= baseline p95 * ratio + "
            "latency_slack_seconds, checked when a step passes (0 turns it off)."
        },
    )
    latency_slack_seconds: float = field(
        default=0.1,
        metadata={"description": "Absolute allowance added to the latency bound, seconds."},
    )
    latency_min_requests: int = field(
        default=20,
        metadata={"description": "Canary requests needed before its p95 is compared."},
    )
    max_client_error_increase: float = field(
        default=0.02,
        metadata={
            "description": "4xx bound: a candidate whose 4xx share exceeds the baseline's by "
            "more than this (and by baseline_z standard errors) is not promoted; checked "
            "when a step or the shadow would pass (1 turns it off)."
        },
    )
    client_error_min_requests: int = field(
        default=20,
        metadata={"description": "Candidate requests needed before its 4xx share is compared."},
    )
    min_requests: int = field(
        default=0,
        metadata={
            "description": "Requests the candidate must have served in a step for it to pass "
            "(in 'sequential' the test already needs enough; 'count' used 20)."
        },
    )
    breach_min_requests: int = field(
        default=5,
        metadata={"description": "'count' mode: requests a breaching reading must rest on."},
    )
    shadow: bool = field(
        default=True,
        metadata={
            "description": "Start with a shadow step: the router mirrors requests to the "
            "candidate and answers every client with the baseline; a failing shadow ends "
            "the release before the first step (targets that cannot mirror skip it)."
        },
    )
    shadow_percent: int = field(
        default=100,
        metadata={"description": "Share of client requests mirrored to the candidate, percent."},
    )
    shadow_min_pairs: int = field(
        default=200,
        metadata={
            "description": "Scores paired by request (both versions answered) needed before "
            "the shadow's score checks run and it can pass."
        },
    )
    shadow_min_rank_correlation: float = field(
        default=0.7,
        metadata={
            "description": "Shadow fails below this Spearman rank correlation between the "
            "candidate's and the baseline's scores on the same requests."
        },
    )
    shadow_min_top_decile_agreement: float = field(
        default=0.5,
        metadata={
            "description": "Shadow fails when fewer of the baseline's top-decile requests "
            "are in the candidate's top decile (share, 0..1)."
        },
    )
    shadow_max_score_psi: float = field(
        default=0.25,
        metadata={
            "description": "Shadow fails above this PSI between the candidate's and the "
            "baseline's score distributions (bins: the baseline's deciles)."
        },
    )
    shadow_offline_margin: float = field(
        default=0.1,
        metadata={
            "description": "How much worse than on the holdout the shadow's agreement may be: "
            "the two models' rank correlation and top-decile agreement on the holdout rows, "
            "minus this, lower the score thresholds (and twice their PSI plus "
            "shadow_max_score_psi raises the PSI bound) when the candidate is meant to differ."
        },
    )
    schema_change: SchemaChangeMode = field(
        default="refuse",
        metadata={
            "description": "A candidate requiring request fields the champion's clients do not "
            "send (core.schema_change): 'refuse' (default) releases nothing and names the "
            "fields; 'cutover' runs the shadow step, then moves 100% at once (no partial "
            "steps: clients shaped for one version break on the other)."
        },
    )
    max_unreachable_readings: int | None = field(
        default=5,
        metadata={
            "description": "Abort after this many readings in a row where the metrics source "
            "could not be reached (None: only judge at the step's end)."
        },
    )

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        _check_steps(steps)
        _check_timing(self)
        _check_rates(self)
        _check_counts(self)
        _check_shadow(self)


def _check_steps(steps: Sequence[int]) -> None:
    """Whole percents in 1..100, strictly increasing, ending at 100."""
    if not steps:
        raise ValueError("CanaryConfig.steps is empty; give traffic percents such as (5, 25, 100)")
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 100:
            raise ValueError(
                f"CanaryConfig.steps must be whole percents in 1..100, got {s!r} in {steps}"
            )
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"CanaryConfig.steps must be strictly increasing, got {steps}")
    if steps[-1] != 100:
        raise ValueError(
            f"CanaryConfig.steps must end at 100 so the candidate is fully promoted, got {steps}"
        )


def _check_timing(config: CanaryConfig) -> None:
    """The analysis window and the reading interval: positive, finite, interval <= window."""
    if not (config.analysis_window_seconds > 0 and math.isfinite(config.analysis_window_seconds)):
        raise ValueError(
            "CanaryConfig.analysis_window_seconds must be a positive number of seconds, "
            f"got {config.analysis_window_seconds!r}"
        )
    if not (config.interval_seconds > 0 and math.isfinite(config.interval_seconds)):
        raise ValueError(
            f"CanaryConfig.interval_seconds must be positive, got {config.interval_seconds!r}"
        )
    if config.interval_seconds > config.analysis_window_seconds:
        raise ValueError(
            f"CanaryConfig.interval_seconds ({config.interval_seconds}) must not exceed "
            f"analysis_window_seconds ({config.analysis_window_seconds}); lower the interval"
        )


def _check_rates(config: CanaryConfig) -> None:
    """The error bound, the analysis mode, the test's ratio and error rates, the latency bound."""
    if not 0.0 <= config.max_error_rate <= 1.0:
        raise ValueError(
            "CanaryConfig.max_error_rate is a share of requests in [0, 1] (0.05 = 5%), "
            f"got {config.max_error_rate!r}"
        )
    if config.analysis not in ANALYSIS_MODES:
        raise ValueError(
            f"CanaryConfig.analysis must be one of {ANALYSIS_MODES}, got {config.analysis!r}"
        )
    if config.schema_change not in SCHEMA_CHANGE_MODES:
        raise ValueError(
            f"CanaryConfig.schema_change must be one of {SCHEMA_CHANGE_MODES}, "
            f"got {config.schema_change!r}"
        )
    if config.analysis == "sequential" and not 0.0 < config.max_error_rate < 0.5:
        raise ValueError(
            "CanaryConfig.max_error_rate must be in (0, 0.5) for the sequential test, got "
            f"{config.max_error_rate!r}; use analysis='count' for a zero-error bound"
        )
    if not (config.sprt_ratio > 1.0 and math.isfinite(config.sprt_ratio)):
        raise ValueError(f"CanaryConfig.sprt_ratio must be > 1, got {config.sprt_ratio!r}")
    for name in ("false_rollback_rate", "missed_breach_rate"):
        value = getattr(config, name)
        if not 0.0 < value < 0.5:
            raise ValueError(f"CanaryConfig.{name} must be in (0, 0.5), got {value!r}")
    if not (config.baseline_z >= 0 and math.isfinite(config.baseline_z)):
        raise ValueError(f"CanaryConfig.baseline_z must be >= 0, got {config.baseline_z!r}")
    if not (config.max_latency_ratio >= 0 and math.isfinite(config.max_latency_ratio)):
        raise ValueError(
            "CanaryConfig.max_latency_ratio must be >= 0 (0 turns the latency check off), "
            f"got {config.max_latency_ratio!r}"
        )
    if not 0.0 <= config.max_client_error_increase <= 1.0:
        raise ValueError(
            "CanaryConfig.max_client_error_increase is a share in [0, 1] (0.02 = 2 points above "
            f"the baseline's 4xx share; 1 turns the check off), got "
            f"{config.max_client_error_increase!r}"
        )
    if not config.latency_slack_seconds >= 0:
        raise ValueError(
            f"CanaryConfig.latency_slack_seconds must be >= 0, got {config.latency_slack_seconds}"
        )


def _check_counts(config: CanaryConfig) -> None:
    """Request minimums >= 0; the unreachable-reading limit >= 1 or None."""
    for name in (
        "min_requests",
        "breach_min_requests",
        "latency_min_requests",
        "client_error_min_requests",
    ):
        value = getattr(config, name)
        if value < 0:
            raise ValueError(f"CanaryConfig.{name} must be >= 0, got {value}")
    if config.max_unreachable_readings is not None and config.max_unreachable_readings < 1:
        raise ValueError(
            "CanaryConfig.max_unreachable_readings must be >= 1 or None, "
            f"got {config.max_unreachable_readings}"
        )


def _check_shadow(config: CanaryConfig) -> None:
    """The shadow step's share, minimum and thresholds."""
    p = config.shadow_percent
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 100:
        raise ValueError(
            f"CanaryConfig.shadow_percent must be a whole percent in 1..100, got {p!r}"
        )
    if config.shadow_min_pairs < 2:
        raise ValueError(
            f"CanaryConfig.shadow_min_pairs must be >= 2 (a rank correlation needs pairs), "
            f"got {config.shadow_min_pairs}"
        )
    for name in ("shadow_min_rank_correlation", "shadow_min_top_decile_agreement"):
        value = getattr(config, name)
        if not -1.0 <= value <= 1.0:
            raise ValueError(f"CanaryConfig.{name} must be in [-1, 1], got {value!r}")
    if not 0.0 <= config.shadow_offline_margin <= 1.0:
        raise ValueError(
            "CanaryConfig.shadow_offline_margin must be in [0, 1], "
            f"got {config.shadow_offline_margin!r}"
        )
    if not (config.shadow_max_score_psi > 0 and math.isfinite(config.shadow_max_score_psi)):
        raise ValueError(
            f"CanaryConfig.shadow_max_score_psi must be > 0, got {config.shadow_max_score_psi!r}"
        )
