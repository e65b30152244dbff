"""The ``model_performance`` step and the performance trigger: one prediction week judged,
its metadata, what it exports for Prometheus, and the sensor's one-run-per-episode rule.

The asset (``defs/after_release.py``) reads the served predictions, the outcomes, each
served version's spec, holdout AUC and CBPE calibrator, and hands them here. A mature week
is scored (``core.performance``) and gets the three checks; an immature week is *pending*:
only the CBPE estimate (``core.cbpe``), no realized figure, and the checks pass saying so.
Nothing here imports Dagster or MLflow.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from churn_platform.core import cbpe
from churn_platform.core import performance as perf
from churn_platform.core.markdown import markdown_table
from churn_platform.core.report import embed_png
from churn_platform.core.spec import Spec

REALIZED_AUC_CHECK = "realized_auc_consistent"
CALIBRATION_CHECK = "calibration_within_bound"
MATCH_RATE_CHECK = "match_rate_above_bound"
CHECK_DESCRIPTIONS: dict[str, str] = {
    REALIZED_AUC_CHECK: "Each served version's realized AUC on the matured week is consistent "
    "with its holdout AUC: fails when the bootstrap interval lies wholly below holdout AUC "
    "minus the tolerance. CBPE cannot see concept drift; this check can.",
    CALIBRATION_CHECK: "Each served version's expected calibration error (10 equal-width bins) "
    "is within the bound.",
    MATCH_RATE_CHECK: "Each served version's share of predictions that found an outcome is "
    "above the bound (a low rate means the join or the outcome source is broken).",
}
PERFORMANCE_EXPORT_KEY = "monitoring/model_performance.json"
TRIGGERS = ("realized", "estimate")


@dataclass(frozen=True)
class MonitorSettings:
    """How after-release performance is judged (README settings table).

    start_date: the first prediction week (YYYY-MM-DD, a Sunday: weeks run Sunday to
        Saturday, UTC), the partitions' start.
    auc_tolerance: realized check and trigger: the AUC drop below the holdout AUC tolerated.
    max_calibration_error: calibration check: the largest expected calibration error.
    min_match_rate: match-rate check: the smallest share of predictions with an outcome.
    trigger: what the performance sensor judges: realized (matured weeks) or estimate (CBPE).
    """

    start_date: str = "2026-11-01"
    auc_tolerance: float = 0.02
    max_calibration_error: float = 0.05
    min_match_rate: float = 0.8
    trigger: str = "realized"

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        try:
            pd.Timestamp(self.start_date)
        except ValueError as exc:
            raise ValueError(
                f"start_date must be a date YYYY-MM-DD, got {self.start_date!r}"
            ) from exc

    def performance(self, label_delay_days: int) -> perf.PerformanceSettings:
        """The ``core.performance`` settings for a spec's ``label_delay_days``."""
        return perf.PerformanceSettings(
            label_delay_days=label_delay_days,
            auc_tolerance=self.auc_tolerance,
            max_calibration_error=self.max_calibration_error,
            min_match_rate=self.min_match_rate,
        )


@dataclass(frozen=True)
class VersionReport:
    """One served version on one week: realized figures (mature), estimate, checks."""

    version: str
    holdout_auc: float | None
    estimate: cbpe.CbpeEstimate | None
    performance: perf.VersionPerformance | None = None
    checks: dict[str, perf.PerformanceCheck] = field(default_factory=dict)


@dataclass(frozen=True)
class WeekReport:
    """A prediction week judged: pending or scored, per version."""

    week: perf.WeekPerformance
    versions: tuple[VersionReport, ...]


def _estimates(
    predictions: pd.DataFrame,
    week_start: str,
    calibrators: Mapping[str, cbpe.IsotonicCalibrator | None],
) -> dict[str, cbpe.CbpeEstimate | None]:
    """CBPE per version on the week's latest prediction per customer (no outcomes used)."""
    start, end = perf.week_bounds(week_start)
    rows = perf.latest_per_entity(predictions, start, end).rows
    out: dict[str, cbpe.CbpeEstimate | None] = {}
    for version, part in rows.groupby(rows["model_version"].astype(str), sort=True):
        calibrator = calibrators.get(str(version))
        scores = pd.to_numeric(part["probability"], errors="coerce").to_numpy(dtype=float)
        out[str(version)] = (
            None if calibrator is None else cbpe.estimate_version(str(version), scores, calibrator)
        )
    return out


def evaluate_week(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    week_start: str,
    now_ts: float,
    settings: perf.PerformanceSettings,
    served: Mapping[str, tuple[Spec | None, float | None, cbpe.IsotonicCalibrator | None]],
) -> WeekReport:
    """Judge the week starting ``week_start`` at ``now_ts``.

    ``served`` maps a version to its (spec, holdout AUC, CBPE calibrator); a version without
    a calibrator gets no estimate, one without a holdout AUC no realized check.
    """
    specs = {v: s for v, (s, _, _) in served.items() if s is not None}
    week = perf.week_performance(predictions, outcomes, week_start, now_ts, settings, specs)
    estimates = _estimates(predictions, week_start, {v: c for v, (_, _, c) in served.items()})
    scored = {p.model_version: p for p in week.versions}
    reports = []
    for version in sorted(set(estimates) | set(scored), key=_version_order):
        holdout = served.get(version, (None, None, None))[1]
        estimate = estimates.get(version)
        realized = scored.get(version)
        if estimate is not None and realized is not None:
            estimate = replace(estimate, realized_auc=realized.auc)
        checks = {} if realized is None else _checks(realized, holdout, settings)
        reports.append(VersionReport(version, holdout, estimate, realized, checks))
    return WeekReport(week, tuple(reports))


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


def _checks(
    realized: perf.VersionPerformance, holdout: float | None, settings: perf.PerformanceSettings
) -> dict[str, perf.PerformanceCheck]:
    out = {
        CALIBRATION_CHECK: perf.calibration_check(realized, settings.max_calibration_error),
        MATCH_RATE_CHECK: perf.match_rate_check(realized, settings.min_match_rate),
    }
    out[REALIZED_AUC_CHECK] = (
        perf.realized_auc_check(realized, holdout, settings.auc_tolerance)
        if holdout is not None
        else perf.PerformanceCheck(
            True, f"version {realized.model_version}: no holdout AUC logged, nothing to compare"
        )
    )
    return out


def check_results(report: WeekReport) -> dict[str, tuple[bool, str]]:
    """Per check name: passed (every version passed) and the description. A pending week's
    checks pass saying when the week matures: it is not scored as if it were."""
    week = report.week
    if week.status == "pending":
        due = _iso(week.matures_at)
        text = f"week {week.week_start} is pending: its outcomes are final at {due}"
        return {name: (True, text) for name in CHECK_DESCRIPTIONS}
    out = {}
    for name in CHECK_DESCRIPTIONS:
        found = [v.checks[name] for v in report.versions if name in v.checks]
        if not found:
            out[name] = (True, f"week {week.week_start}: no served version was scored")
            continue
        out[name] = (all(c.passed for c in found), " | ".join(c.description for c in found))
    return out


def _iso(ts: float) -> str:
    return pd.Timestamp(int(ts), unit="s", tz="UTC").isoformat()


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def versions_table(report: WeekReport) -> pd.DataFrame:
    """One row per served version: rows, match rate, churners, realized and holdout AUC,
    the CBPE estimate and its error, Brier, calibration error, top-10% precision/recall."""
    rows = []
    for v in report.versions:
        p, e = v.performance, v.estimate
        rows.append(
            {
                "version": v.version,
                "predictions": p.n_predictions if p else (e.n if e else 0),
                "matched": p.n_matched if p else "pending",
                "match rate": _fmt(p.match_rate, 3) if p else "pending",
                "churners": p.n_churners if p else "pending",
                "realized AUC": (
                    f"{_fmt(p.auc)} [{_fmt(p.auc_lower)}, {_fmt(p.auc_upper)}]" if p else "pending"
                ),
                "holdout AUC": _fmt(v.holdout_auc),
                "CBPE estimate": _fmt(e.auc_estimate) if e else "no calibrator",
                "estimate error": _fmt(e.error) if e else "n/a",
                "Brier": _fmt(p.brier) if p else "pending",
                "calibration error": _fmt(p.calibration_error) if p else "pending",
                "top-10% precision": _fmt(p.top_precision, 3) if p else "pending",
                "top-10% recall": _fmt(p.top_recall, 3) if p else "pending",
            }
        )
    return pd.DataFrame(rows)


def reliability_png(report: WeekReport) -> bytes | None:
    """The reliability diagram of every scored version (mean predicted vs observed churn per
    bin) as PNG bytes; None when no version was scored."""
    scored = [v for v in report.versions if v.performance is not None]
    if not scored:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for v in scored:
        assert v.performance is not None
        bins = [b for b in v.performance.reliability if b.n]
        ax.plot(
            [float(b.mean_probability or 0.0) for b in bins],
            [float(b.churn_rate or 0.0) for b in bins],
            marker="o",
            label=f"v{v.version}",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="mean predicted churn",
        ylabel="observed churn rate",
        title=f"Reliability, week {report.week.week_start}",
    )
    ax.legend(loc="upper left")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def reliability_markdown(report: WeekReport) -> str:
    """The reliability diagram of the scored versions (an inline PNG), then each version's
    bins as a table with a text bar (predicted vs observed churn rate)."""
    png = reliability_png(report)
    parts = [] if png is None else [embed_png(png, "reliability diagram")]
    for v in report.versions:
        if v.performance is None:
            continue
        rows = [
            {
                "bin": f"{b.low:.1f}-{b.high:.1f}",
                "rows": b.n,
                "mean predicted": _fmt(b.mean_probability, 3),
                "observed churn": _fmt(b.churn_rate, 3),
                "observed": "#" * round(20 * (b.churn_rate or 0.0)),
            }
            for b in v.performance.reliability
            if b.n
        ]
        parts.append(f"**version {v.version}**\n\n{markdown_table(pd.DataFrame(rows))}")
    return "\n\n".join(parts) or "_pending: no outcomes yet_"


def slices_markdown(report: WeekReport) -> str:
    """AUC per slice of each scored version's spec (or why a slice got none)."""
    rows = [
        {
            "version": v.version,
            "slice": s.name,
            "rows": s.n,
            "churners": s.n_pos,
            "AUC": _fmt(s.auc) if s.auc is not None else s.skipped_reason,
        }
        for v in report.versions
        if v.performance is not None
        for s in v.performance.slices
    ]
    return markdown_table(pd.DataFrame(rows)) if rows else "_no slice AUC (pending or no spec)_"


def week_metadata(report: WeekReport) -> dict[str, Any]:
    """What the UI shows of a week (plain values; the asset wraps the markdown ones):
    status, maturity, counts, the versions table, reliability, slices, the CBPE blind spot,
    and numeric entries per version (``realized_auc_v3``, ``estimated_auc_v3``) to plot."""
    week = report.week
    meta: dict[str, Any] = {
        "status": week.status,
        "week_start": week.week_start,
        "matures_at": _iso(week.matures_at),
        "predictions_logged": week.n_logged,
        "predictions_without_entity_id": week.n_without_id,
        "versions": markdown_table(versions_table(report)) if report.versions else "none served",
        "reliability": reliability_markdown(report),
        "slices": slices_markdown(report),
        "what_cbpe_cannot_see": cbpe.BLIND_SPOT,
    }
    for v in report.versions:
        if v.performance is not None and v.performance.auc is not None:
            meta[f"realized_auc_v{v.version}"] = round(v.performance.auc, 5)
        if v.estimate is not None and v.estimate.auc_estimate is not None:
            meta[f"estimated_auc_v{v.version}"] = round(v.estimate.auc_estimate, 5)
        if v.estimate is not None and v.estimate.error is not None:
            meta[f"estimate_error_v{v.version}"] = round(v.estimate.error, 5)
    return meta


# ---------------------------------------------------------------------------------------
# the export (Prometheus gauges, the sensor's input)


def export_week(existing: str | None, report: WeekReport, now_ts: float) -> str:
    """The export JSON with ``report`` merged in: per version, the newest week's realized
    AUC (mature weeks) and the newest week's estimate, each with its week; the holdout AUC."""
    try:
        state = json.loads(existing) if existing else {}
    except json.JSONDecodeError:
        state = {}
    versions: dict[str, Any] = dict(state.get("versions") or {})
    week = report.week.week_start
    for v in report.versions:
        entry = dict(versions.get(v.version) or {})
        entry["holdout_auc"] = v.holdout_auc
        p = v.performance
        if p is not None and p.auc is not None and week >= entry.get("realized_week", ""):
            entry.update(
                realized_week=week,
                realized_auc=p.auc,
                realized_lower=p.auc_lower,
                realized_upper=p.auc_upper,
                realized_rows=p.n_matched,
            )
        e = v.estimate
        if e is not None and e.auc_estimate is not None and week >= entry.get("estimate_week", ""):
            entry.update(estimate_week=week, estimated_auc=e.auc_estimate)
        versions[v.version] = entry
    return json.dumps({"updated": float(now_ts), "versions": versions}, sort_keys=True)


# ---------------------------------------------------------------------------------------
# the performance trigger


@dataclass(frozen=True)
class TriggerDecision:
    """One performance-sensor tick: whether to request a run, why, and the new cursor."""

    request_run: bool
    reason: str
    cursor: str
    run_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _below(entry: Mapping[str, Any], trigger: str, tolerance: float) -> tuple[bool, str, str]:
    """(significantly below?, the figures as text, the week judged) for one version."""
    holdout = entry.get("holdout_auc")
    if holdout is None:
        return False, "no holdout AUC logged with the version", ""
    floor = float(holdout) - tolerance
    if trigger == "realized":
        upper, auc_ = entry.get("realized_upper"), entry.get("realized_auc")
        if upper is None or auc_ is None:
            return False, "no matured week scored yet", ""
        text = (
            f"realized AUC {auc_:.4f} (interval upper {upper:.4f}) vs holdout AUC "
            f"{holdout:.4f} - tolerance {tolerance:.3f} = {floor:.4f}"
        )
        return float(upper) < floor, text, str(entry.get("realized_week", ""))
    est = entry.get("estimated_auc")
    if est is None:
        return False, "no CBPE estimate yet", ""
    text = f"estimated AUC {est:.4f} vs holdout AUC {holdout:.4f} - tolerance {tolerance:.3f}"
    return float(est) < floor, text, str(entry.get("estimate_week", ""))


def judge_trigger(
    export: str | None, champion: str, settings: MonitorSettings, cursor: str | None
) -> TriggerDecision:
    """One run per episode: the champion's AUC (realized or, with ``trigger=estimate``, the
    CBPE estimate) significantly below its holdout AUC starts an episode and requests one
    retraining run; the episode lasts (no further run) until the figure recovers or the
    champion changes."""
    state = json.loads(cursor) if cursor else {}
    episode = int(state.get("episode", 0))
    in_episode = bool(state.get("in_episode")) and state.get("champion") == champion
    entry = (json.loads(export).get("versions") or {}).get(champion) if export else None
    if entry is None:
        new = json.dumps({"episode": episode, "in_episode": False, "champion": champion})
        return TriggerDecision(False, f"no performance figures for champion v{champion}", new)
    below, figures, week = _below(entry, settings.trigger, settings.auc_tolerance)
    if not below:
        new = json.dumps({"episode": episode, "in_episode": False, "champion": champion})
        return TriggerDecision(False, f"champion v{champion}: {figures}", new)
    if in_episode:
        return TriggerDecision(
            False,
            f"champion v{champion} still below (episode {episode} already requested its run): "
            f"{figures}",
            cursor or "",
        )
    episode += 1
    run_key = f"performance-v{champion}-episode-{episode}"
    new = json.dumps({"episode": episode, "in_episode": True, "champion": champion})
    tags = {
        "churn/trigger": "performance",
        "churn/champion_version": champion,
        "churn/performance_measure": settings.trigger,
        "churn/performance_week": week,
        "churn/performance_auc": f"{entry.get(_figure_key(settings.trigger)):.4f}",
        "churn/holdout_auc": f"{float(entry['holdout_auc']):.4f}",
    }
    return TriggerDecision(True, f"champion v{champion}: {figures}", new, run_key, tags)


def _figure_key(trigger: str) -> str:
    return "realized_auc" if trigger == "realized" else "estimated_auc"
