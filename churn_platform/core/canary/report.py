"""What a rollout leaves behind: every ``Transition`` with its evidence, the ``CanaryResult``,
the one ``Recorder`` that appends them, and their text (the transition table, the summary
line, the CLI's release line)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from churn_platform.core.canary.comparison import ShadowReading
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.rollout import ErrorRate


@dataclass(frozen=True)
class Transition:
    """One state change of a rollout, with the evidence that caused it.

    at: the controller's clock (monotonic seconds) when it happened.
    wall_time: Unix time of the same moment, for humans and logs.
    weights: traffic percent per version after the transition.
    reading: the metric reading that caused it, when one did.
    """

    at: float
    wall_time: float
    from_state: CanaryState
    to_state: CanaryState
    weights: dict[str, int]
    reading: ErrorRate | None
    reason: str
    step: int | None = None  # candidate percent of the step this belongs to
    baseline_reading: ErrorRate | None = None  # the baseline over the same window
    llr: float | None = None  # the sequential test's log likelihood ratio at this reading
    shadow: ShadowReading | None = None  # the shadow comparison at this reading

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view (for Dagster metadata and logs)."""
        return {
            "at": self.at,
            "wall_time": self.wall_time,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "step": self.step,
            "weights": dict(self.weights),
            "reading": _reading_dict(self.reading),
            "baseline_reading": _reading_dict(self.baseline_reading),
            "llr": self.llr,
            "shadow": None if self.shadow is None else self.shadow.as_dict(),
            "reason": self.reason,
        }


def _reading_dict(reading: ErrorRate | None) -> dict[str, object] | None:
    if reading is None:
        return None
    return {
        "version": reading.version,
        "error_rate": reading.error_rate,
        "request_count": reading.request_count,
        "latency_p95_seconds": reading.latency_p95_seconds,
        "client_error_rate": reading.client_error_rate,
        "query": reading.query,
        "reason": reading.reason,
    }


def _rate_cell(reading: ErrorRate | None) -> str:
    if reading is None:
        return ""
    rate = "n/a" if reading.error_rate is None else f"{reading.error_rate:.4f}"
    p95 = (
        ""
        if reading.latency_p95_seconds is None
        else f", p95 {reading.latency_p95_seconds * 1000:.0f} ms"
    )
    refused = f", 4xx {reading.client_error_rate:.2%}" if reading.client_error_rate else ""
    return f"{rate} of {reading.request_count:.0f}{p95}{refused}"


@dataclass
class CanaryResult:
    """The outcome of ``run_canary``.

    rollback_seconds: from the moment the controller decided to roll back (breach
    detected, or analysis failed) until the target confirmed 100% on the baseline;
    None when nothing was rolled back.
    """

    status: CanaryState
    environment: str
    candidate: str
    baseline: str | None
    transitions: list[Transition] = field(default_factory=list)
    final_weights: dict[str, int] = field(default_factory=dict)
    rollback_seconds: float | None = None
    reason: str = ""

    @property
    def promoted(self) -> bool:
        """True when the candidate ended at 100% of the traffic."""
        return self.status is CanaryState.SUCCEEDED

    @property
    def breach(self) -> Transition | None:
        """The transition into ``rolled_back``, if the rollout was rolled back."""
        for t in self.transitions:
            if t.to_state is CanaryState.ROLLED_BACK:
                return t
        return None

    def as_markdown(self) -> str:
        """The transition log, every reading included, as a markdown table."""
        t0 = self.transitions[0].at if self.transitions else 0.0
        lines = [
            "| t (s) | from | to | weights | candidate errors | baseline errors | LLR "
            "| shadow comparison | reason |",
            "|---:|---|---|---|---:|---:|---:|---|---|",
        ]
        for t in self.transitions:
            weights = ", ".join(f"{v}: {w}%" for v, w in t.weights.items())
            reason = t.reason.replace("|", "\\|")
            llr = "" if t.llr is None else f"{t.llr:+.2f}"
            lines.append(
                f"| {t.at - t0:.2f} | {t.from_state.value} | {t.to_state.value} | {weights} "
                f"| {_rate_cell(t.reading)} | {_rate_cell(t.baseline_reading)} | {llr} "
                f"| {'' if t.shadow is None else t.shadow.cell()} | {reason} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line for a CLI or log: the outcome in words and why."""
        words = {
            CanaryState.SUCCEEDED: "released",
            CanaryState.ROLLED_BACK: "rolled back",
            CanaryState.ABORTED: "aborted",
        }.get(self.status, self.status.value)
        return f"canary of version {self.candidate}: {words} - {self.reason}"

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view of the whole result."""
        return {
            "status": self.status.value,
            "environment": self.environment,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "final_weights": dict(self.final_weights),
            "rollback_seconds": self.rollback_seconds,
            "reason": self.reason,
            "transitions": [t.as_dict() for t in self.transitions],
        }


class Recorder:
    """Holds the current state and appends transitions; the only place state changes."""

    def __init__(
        self,
        result: CanaryResult,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_transition: Callable[[Transition], None] | None,
    ) -> None:
        self.result = result
        self.state = CanaryState.PENDING
        self.weights: dict[str, int] = {}
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_transition = on_transition

    def move(
        self,
        to_state: CanaryState,
        reason: str,
        *,
        reading: ErrorRate | None = None,
        step: int | None = None,
        baseline_reading: ErrorRate | None = None,
        llr: float | None = None,
        shadow: ShadowReading | None = None,
    ) -> Transition:
        t = Transition(
            at=self._clock(),
            wall_time=self._wall_clock(),
            from_state=self.state,
            to_state=to_state,
            weights=dict(self.weights),
            reading=reading,
            reason=reason,
            step=step,
            baseline_reading=baseline_reading,
            llr=llr,
            shadow=shadow,
        )
        self.state = to_state
        self.result.transitions.append(t)
        self.result.status = to_state
        if to_state.terminal:
            self.result.reason = reason
            self.result.final_weights = dict(self.weights)
        if self._on_transition is not None:
            self._on_transition(t)
        return t


_RELEASE_WORDS = {
    "promoted": "released",
    CanaryState.SUCCEEDED.value: "released",
    CanaryState.ROLLED_BACK.value: "ROLLED BACK",
    CanaryState.ABORTED.value: "ABORTED",
    "refused": "REFUSED (schema change)",
    "none": "nothing released",
}


def release_line(output: Mapping[str, Any]) -> str:
    """The CLI's line for a ``production_deployment`` output (``action``, ``candidate``,
    ``reason``): a run that rolled back or aborted says so, with the reason, even though
    the run itself succeeded."""
    action = str(output.get("action", "none"))
    words = _RELEASE_WORDS.get(action, action)
    candidate = output.get("candidate")
    who = f" v{candidate}" if candidate and action != "none" else ""
    reason = output.get("reason") or ""
    return f"release{who}: {words}" + (f" - {reason}" if reason else "")


def steps_summary(steps: Sequence[int]) -> str:
    """'5% -> 25% -> 100%' for logs and descriptions."""
    return " -> ".join(f"{s}%" for s in steps)
