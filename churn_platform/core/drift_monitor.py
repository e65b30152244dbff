"""The drift monitor's decisions: which windows to judge, and when a drift episode starts.

The Dagster sensor (``defs/automation.py``) only gathers inputs (the champion's reference
profile, the current windows, its cursor) and turns a ``DriftDecision`` into a run request or a
skip. An episode is a stretch of ticks whose max PSI stays above the threshold for the same
champion; it requests one retraining run when it starts and none while it lasts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from churn_platform.core import drift

THRESHOLD_VAR = "CHURN_PSI_THRESHOLD"
MIN_ROWS_VAR = "CHURN_DRIFT_MIN_ROWS"


@dataclass(frozen=True)
class DriftSettings:
    """PSI threshold and the smallest window worth judging (``settings.drift_settings()`` reads
    them from ``CHURN_PSI_THRESHOLD`` and ``CHURN_DRIFT_MIN_ROWS``)."""

    threshold: float = 0.2
    min_rows: int = 200

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(
                f"{THRESHOLD_VAR}={self.threshold!r} must be a positive number such as 0.2"
            )
        if self.min_rows < 1:
            raise ValueError(f"{MIN_ROWS_VAR}={self.min_rows!r} must be an integer >= 1")


@dataclass(frozen=True)
class EpisodeState:
    """What the monitor remembers between ticks (the sensor's cursor)."""

    episode: int = 0  # drift episodes so far
    in_drift: bool = False  # whether the last judged tick was above the threshold
    champion: str | None = None  # the champion that state was measured against
    # the source window's last PSI and the fingerprint of the snapshot it was computed on,
    # so an unchanged source is not read again on every tick
    source_cache: dict[str, Any] | None = None

    def cached_source(self, champion: str, fingerprint: str | None) -> drift.PsiResult | None:
        """The source window's PSI from an earlier tick, when neither the snapshot nor the
        champion changed since."""
        cache = self.source_cache
        if not fingerprint or not cache or self.champion != champion:
            return None
        if cache.get("fingerprint") != fingerprint:
            return None
        return drift.PsiResult(**cache["result"])

    def with_source(self, fingerprint: str | None, result: drift.PsiResult | None) -> EpisodeState:
        """This state remembering ``result`` as the PSI of the snapshot ``fingerprint``."""
        if not fingerprint or result is None:
            return replace(self, source_cache=None)
        return replace(self, source_cache={"fingerprint": fingerprint, "result": asdict(result)})

    @classmethod
    def parse(cls, raw: str | None) -> EpisodeState:
        """Read a cursor; one written before ``champion`` was recorded keeps its episode."""
        if not raw:
            return cls()
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError:
            loaded = None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("episode", 0), int):
            raise ValueError(
                f"psi_drift_sensor cursor {raw!r} is not this sensor's JSON state "
                '(e.g. {"episode": 1, "in_drift": false, "champion": "3"}); fix or clear it in the UI'
            )
        return cls(
            episode=int(loaded.get("episode", 0)),
            in_drift=bool(loaded.get("in_drift", False)),
            champion=loaded.get("champion"),
            source_cache=loaded.get("source_cache"),
        )

    def dumps(self) -> str:
        """The cursor text."""
        return json.dumps(
            {
                "episode": self.episode,
                "in_drift": self.in_drift,
                "champion": self.champion,
                "source_cache": self.source_cache,
            }
        )


@dataclass(frozen=True)
class DriftDecision:
    """One tick's verdict: request a run (a new episode) or skip, and why."""

    request_run: bool
    reason: str
    state: EpisodeState
    results: dict[str, drift.PsiResult] = field(default_factory=dict)
    worst_window: str | None = None

    @property
    def worst(self) -> drift.PsiResult | None:
        """The window with the highest max PSI."""
        return self.results.get(self.worst_window) if self.worst_window else None

    @property
    def run_key(self) -> str:
        """Dagster run key of the episode's retraining run."""
        return f"drift-episode-{self.state.episode}"


def judge_windows(
    profile: Mapping[str, Any], windows: Mapping[str, pd.DataFrame], min_rows: int
) -> tuple[dict[str, drift.PsiResult], list[str]]:
    """PSI per window large enough to judge, and the skipped windows with their reasons.

    The profile names the champion's drift features (it was built with the champion's
    spec). A window that lacks some of them (the source mapped with a newer spec that
    dropped a feature) is judged on the rest, and the missing ones are listed as skipped.
    """
    results: dict[str, drift.PsiResult] = {}
    skipped: list[str] = []
    features: Mapping[str, Any] = profile.get("features") or {}
    for name, frame in windows.items():
        if len(frame) < min_rows:
            skipped.append(f"{name}: {len(frame)} rows, fewer than {min_rows}")
            continue
        absent = [c for c in features if c not in frame.columns]
        judged = profile
        if absent:
            skipped.append(f"{name}: lacks champion drift feature(s) {absent}, not judged on them")
            if len(absent) == len(features):
                continue
            judged = {
                **profile,
                "features": {c: v for c, v in features.items() if c not in absent},
            }
        result = drift.psi(judged, frame)
        if result.max_psi is None:
            skipped.append(f"{name}: {result.skipped_reason or 'no PSI computed'}")
            continue
        results[name] = result
    return results, skipped


def decide(
    state: EpisodeState,
    champion: str,
    results: dict[str, drift.PsiResult],
    skipped: list[str],
    threshold: float,
) -> DriftDecision:
    """Whether this tick starts a drift episode (one run request) or is skipped, with the reason.

    A drift state belongs to the champion it was measured against: after a new champion,
    drift against its reference starts a new episode (a state naming no champion predates
    that rule and keeps its episode).
    """
    in_drift = state.in_drift and state.champion in (None, champion)
    if not results:
        return DriftDecision(
            request_run=False,
            reason=f"no window to judge drift on: {'; '.join(skipped)}",
            state=replace(state, in_drift=in_drift, champion=champion),
        )
    worst_name, worst = max(results.items(), key=lambda item: item[1].max_psi or 0.0)
    drifting = (worst.max_psi or 0.0) > threshold
    if drifting and not in_drift:
        episode = state.episode + 1
        return DriftDecision(
            request_run=True,
            reason=(
                f"drift episode {episode} starts: {worst_name} max PSI {worst.max_psi:.3f} > "
                f"{threshold} on {worst.max_feature}"
            ),
            state=replace(state, episode=episode, in_drift=True, champion=champion),
            results=results,
            worst_window=worst_name,
        )
    if drifting:
        reason = (
            f"drift episode {state.episode} continues ({worst_name} max PSI {worst.max_psi:.3f} "
            f"> {threshold} on {worst.max_feature}); its retraining run was already requested"
        )
    else:
        values = sorted(worst.psi.items(), key=lambda kv: -kv[1])
        summary = ", ".join(f"{f}={v:.3f}" for f, v in values)
        reason = f"max PSI {worst.max_psi:.3f} <= {threshold} ({worst_name}: {summary})"
    if skipped:
        reason += f"; skipped {'; '.join(skipped)}"
    return DriftDecision(
        request_run=False,
        reason=reason,
        state=replace(state, in_drift=drifting, champion=champion),
        results=results,
        worst_window=worst_name,
    )


# The latest PSI per feature, as the drift sensor last computed it: one small JSON document in
# the platform's storage, which the router's /metrics turns into gauges (Prometheus and
# Grafana see drift without reading Dagster's event log).
PSI_EXPORT_KEY = "monitoring/feature_psi.json"
PSI_EXPORT_FORMAT = "churn_platform.feature_psi/1"


@dataclass(frozen=True)
class PsiSample:
    """One exported PSI value: a feature of one window, against one champion's profile."""

    window: str
    feature: str
    model_version: str
    psi: float


def psi_export(
    champion: str, results: Mapping[str, drift.PsiResult], threshold: float, at: float
) -> str:
    """The export document (JSON text) for a tick's per-window results; ``at`` is a Unix time."""
    return json.dumps(
        {
            "format": PSI_EXPORT_FORMAT,
            "updated_at": at,
            "champion_version": champion,
            "threshold": threshold,
            "windows": {
                name: {k: v for k, v in result.psi.items() if math.isfinite(v)}
                for name, result in results.items()
            },
        },
        sort_keys=True,
    )


def parse_psi_export(text: str) -> tuple[float | None, list[PsiSample]]:
    """``(updated_at, samples)`` of an export document; ValueError when it is not one."""
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("format") != PSI_EXPORT_FORMAT:
        raise ValueError(f"not a {PSI_EXPORT_FORMAT} document")
    champion = str(document.get("champion_version", ""))
    samples = [
        PsiSample(str(window), str(feature), champion, float(value))
        for window, features in dict(document.get("windows") or {}).items()
        for feature, value in dict(features).items()
    ]
    updated = document.get("updated_at")
    return (float(updated) if updated is not None else None), samples


SOURCE_WINDOW = "source_snapshot"  # the newest snapshot of the data source


def judge_tick(
    state: EpisodeState,
    champion: str,
    profile: Mapping[str, Any],
    windows: Mapping[str, pd.DataFrame],
    skipped: list[str],
    cached: drift.PsiResult | None,
    fingerprint: str | None,
    settings: DriftSettings,
) -> DriftDecision:
    """One tick's decision on the windows read now (``skipped``: the ones that could not be
    read), with the source window's PSI from an earlier tick when ``cached``; the state
    remembers the source's PSI under its snapshot ``fingerprint`` for the next tick."""
    results, too_small = judge_windows(profile, windows, settings.min_rows)
    if cached is not None:
        results = {SOURCE_WINDOW: cached, **results}
    decision = decide(state, champion, results, [*skipped, *too_small], settings.threshold)
    return replace(
        decision, state=decision.state.with_source(fingerprint, results.get(SOURCE_WINDOW))
    )


def no_profile_reason(champion: str, run_id: str, artifact: str) -> str:
    """Why a tick is skipped when the champion's run has no reference profile."""
    return (
        f"champion version {champion} (MLflow run {run_id}) has no {artifact}: no "
        "reference to compare with; retrain through challenger_model, which logs one"
    )


def drift_reason(decision: DriftDecision, threshold: float) -> str:
    """The notification's one line on a new drift episode (its worst window)."""
    worst = decision.worst
    if worst is None:
        return decision.reason
    return (
        f"PSI {worst.max_psi:.3f} on {worst.max_feature} ({decision.worst_window}) exceeds "
        f"{threshold}"
    )


def run_tags(decision: DriftDecision, champion: str) -> dict[str, str]:
    """The tags of a drift episode's retraining run."""
    worst = decision.worst
    return {
        "churn/trigger": "drift",
        "churn/drift_feature": (worst.max_feature if worst else None) or "",
        "churn/drift_window": decision.worst_window or "",
        "churn/drift_max_psi": f"{worst.max_psi:.4f}" if worst else "",
        "churn/champion_version": champion,
    }


def observation_metadata(
    window: str, result: drift.PsiResult, champion: str, threshold: float
) -> dict[str, Any]:
    """One window's PSI as observation metadata (numbers, so the UI plots them)."""
    return {
        "drift_window": window,
        "champion_version": champion,
        "threshold": float(threshold),
        "max_psi": round(float(result.max_psi or 0.0), 5),
        "max_psi_feature": result.max_feature or "none",
        "rows": result.n_rows,
        **{f"psi_{feature}": round(value, 5) for feature, value in result.psi.items()},
        **{f"unseen_{feature}": count for feature, count in result.unseen_counts.items()},
    }
