"""The serving watchdog: a deployment's health watched between releases, not only during one.

``watch`` compares what an environment should serve (the target's own records, the
registry's ``champion``) with what is alive (processes running, the router answering, the
weights it applies now). What it finds wrong it repairs the way a release starts
(``release.reconcile``): dead servers and the router restarted on their recorded ports, so
the endpoint URL stays the same, and a traffic split no release is running (an interrupted
canary's 95/5) put back to 100% on the champion. Whatever is still wrong afterwards is the
disagreement, reported with the command that fixes it.

``WatchEpisode`` keeps one episode per stretch of trouble: it opens at the first tick that
finds something wrong (the one notification) and closes at the first tick that finds
nothing. The sensor (``defs/serving_watchdog.py``) must call ``watch`` only while no release
holds the deployment: a canary's split is the release's, not a leftover.

Nothing here imports Dagster, MLflow or Kubernetes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from churn_platform.core.records import CHAMPION
from churn_platform.core.release import (
    ModelRegistry,
    Restorable,
    reconcile,
    repair_command,
    traffic_disagreement,
)
from churn_platform.core.rollout import DeploymentTarget

RESTORE_COMMAND = "python -m churn_platform.serving restore"
# the sensor's minimum interval by default: under the 5 s pass of Dagster's sensor daemon, so
# the watchdog ticks on every pass (a dead deployment is found within ~5 s)
WATCHDOG_INTERVAL_SECONDS = 3


@runtime_checkable
class Inspectable(Protocol):
    """A target that can say what its records describe but is not running."""

    def down(self, environment: str) -> list[str]:
        """What is recorded in ``environment`` but not running, one line each."""
        ...


@dataclass(frozen=True)
class WatchReport:
    """One environment on one tick: what was wrong, what was repaired, what still is."""

    environment: str
    findings: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()  # the disagreement after the repair, with its command

    @property
    def healthy(self) -> bool:
        """Nothing was wrong."""
        return not self.findings

    def text(self) -> str:
        """The report as one paragraph: found, repaired, still wrong."""
        if self.healthy:
            return f"{self.environment}: healthy"
        parts = [f"{self.environment}: found {'; '.join(self.findings)}"]
        parts.append(f"repaired: {'; '.join(self.repairs) or 'nothing'}")
        if self.remaining:
            parts.append(f"STILL WRONG: {'; '.join(self.remaining)}")
        return " | ".join(parts)


def _live(target: DeploymentTarget, environment: str) -> dict[str, int] | None:
    """The weights the router applies now (None: no router answers); a target that cannot
    ask its router says what it recorded."""
    live_weights = getattr(target, "live_weights", None)
    if callable(live_weights):
        answer = live_weights(environment)
        return None if answer is None else dict(answer)
    state = target.state(environment)
    return state.weights() if state.endpoint else None


def _problems(
    target: DeploymentTarget, environment: str, champion: str | None
) -> tuple[list[str], str | None]:
    """What is down (processes, a router that does not answer) and what is wrong with the
    traffic (None: nothing), or nothing at all where nothing was ever deployed."""
    down = target.down(environment) if isinstance(target, Inspectable) else []
    state = target.state(environment)
    if not down and state.endpoint is None and not state.versions:
        return [], None
    live = _live(target, environment)
    if live is None:
        if not any(line.startswith("router of") for line in down):
            down.append(f"the router of {environment} does not answer")
        return down, None
    if champion is None or live.get(champion) == 100:
        return down, None
    serving = ", ".join(f"v{v} {w}%" for v, w in sorted(live.items()) if w) or "nothing"
    others = {v: w for v, w in live.items() if v != champion and w}
    keep = ""
    if others:  # the registry is the truth; the other intent has its own command
        leader = max(others, key=lambda v: others[v])
        keep = f" (to make v{leader} the champion instead: {repair_command(leader)})"
    traffic = (
        f"{environment} sends {serving} with no release running; the champion alias "
        f"names v{champion}{keep}"
    )
    return down, traffic


def observe(target: DeploymentTarget, environment: str, champion: str | None) -> list[str]:
    """What is wrong in ``environment`` now, one line each (empty: healthy, or nothing was
    ever deployed there: the watchdog deploys nothing on its own)."""
    down, traffic = _problems(target, environment, champion)
    return [*down, *([traffic] if traffic else [])]


def _remaining(target: DeploymentTarget, environment: str, champion: str | None) -> list[str]:
    """What is still wrong after the repair, each with the command that fixes it."""
    down, traffic = _problems(target, environment, champion)
    left = [*down, f"run: {RESTORE_COMMAND}"] if down else []
    if traffic and champion is not None:
        left.append(traffic_disagreement(champion, _live(target, environment)) or traffic)
    return left


def watch(
    target: DeploymentTarget, registry: ModelRegistry, environment: str, *, repair: bool = True
) -> WatchReport:
    """Observe ``environment``; when something is wrong and ``repair``, repair what can be
    (``reconcile``: restore, then 100% on the champion) and report what still is wrong.

    The caller makes sure no release holds the deployment. A repair that raises is
    reported as still wrong, never raised: the next tick tries again.
    """
    champion = registry.alias_version(CHAMPION)
    findings = observe(target, environment, champion)
    if not findings or not repair:
        return WatchReport(environment, tuple(findings))
    try:
        if champion is not None:
            repairs = reconcile(target, registry, environment)
        elif isinstance(target, Restorable):
            repairs = list(target.restore(environment))
        else:
            repairs = []
    except Exception as exc:  # noqa: BLE001 - reported with the command; the next tick retries
        first = (str(exc).strip().splitlines() or [""])[0]  # not the log tail it may carry
        repairs = [f"the repair failed: {type(exc).__name__}: {first}"]
    return WatchReport(
        environment,
        tuple(findings),
        tuple(repairs),
        tuple(_remaining(target, environment, champion)),
    )


@dataclass(frozen=True)
class WatchEpisode:
    """The watchdog's cursor: whether an episode is open, since when, and how many ticks
    found trouble in it (one notification per episode, at its first tick)."""

    open: bool = False
    started_at: float | None = None
    ticks: int = 0

    @classmethod
    def parse(cls, cursor: str | None) -> WatchEpisode:
        """The episode a cursor holds (none or an unreadable one: no episode open)."""
        try:
            data = json.loads(cursor or "{}")
            return cls(bool(data.get("open")), data.get("started_at"), int(data.get("ticks", 0)))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def dumps(self) -> str:
        """The cursor text."""
        return json.dumps(asdict(self), sort_keys=True)

    def advance(self, reports: Sequence[WatchReport], now: float) -> tuple[WatchEpisode, bool]:
        """The episode after this tick, and whether to notify (the first troubled tick of an
        episode). A tick that finds nothing wrong closes the episode."""
        if all(report.healthy for report in reports):
            return WatchEpisode(), False
        if self.open:
            return WatchEpisode(True, self.started_at, self.ticks + 1), False
        return WatchEpisode(True, now, 1), True


def summary(reports: Sequence[WatchReport]) -> str:
    """Every troubled environment's report, one after the other."""
    return " || ".join(r.text() for r in reports if not r.healthy) or "every deployment healthy"
