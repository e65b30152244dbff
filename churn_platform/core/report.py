"""The evaluation report: champion vs challenger on the same holdout, as markdown with plots."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn_platform.core import gate, metrics
from churn_platform.core.quality_report import markdown_table
from churn_platform.core.records import ChallengerModel, EvaluationDecision


@dataclass(frozen=True)
class ScoredModel:
    """One model's scores on the holdout and where it came from."""

    label: str  # "challenger v7"
    version: str
    scores: np.ndarray
    run_url: str


def roc_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (for plotting)."""
    order = np.argsort(-scores, kind="mergesort")
    y_sorted = y[order].astype(float)
    distinct = np.r_[np.flatnonzero(np.diff(scores[order])), len(y) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1.0)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1.0)]
    return fpr, tpr


def calibration_points(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate per score decile (equal-count bins)."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": idx, "predicted": scores, "observed": y})
    return frame.groupby("bin").agg(
        predicted=("predicted", "mean"), observed=("observed", "mean"), rows=("observed", "size")
    )


def plots_png(y: np.ndarray, models: list[ScoredModel]) -> dict[str, bytes]:
    """ROC curves and a calibration plot of every model, as PNG bytes keyed by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for m in models:
        fpr, tpr = roc_points(y, m.scores)
        ax.plot(fpr, tpr, label=m.label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    ax.legend(loc="lower right")
    out["roc.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for m in models:
        cal = calibration_points(y, m.scores)
        ax.plot(cal["predicted"], cal["observed"], marker="o", label=m.label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="mean predicted churn", ylabel="observed churn rate", title="Calibration (deciles)"
    )
    ax.legend(loc="upper left")
    out["calibration.png"] = _png(fig)
    plt.close("all")
    return out


def _png(fig: object) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buffer, format="png")  # type: ignore[attr-defined]
    return buffer.getvalue()


def embed_png(png: bytes, alt: str) -> str:
    """Markdown image with the PNG inline (the Dagster UI renders data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dataclass(frozen=True)
class Evaluation:
    """The gate's decision on one challenger and the report that explains it."""

    record: EvaluationDecision  # the hand-off to staging
    decision: gate.Decision
    comparison: metrics.PairedComparison | None  # None when there was no champion
    slice_table: pd.DataFrame
    markdown: str
    plots: dict[str, bytes]  # file name -> PNG

    def summary(self) -> dict[str, float]:
        """The comparison's headline numbers (empty without a champion)."""
        c = self.comparison
        if c is None:
            return {}
        return {
            "auc_delta": round(c.delta, 5),
            "auc_delta_ci_lower": round(c.delta_lower, 5),
            "auc_delta_ci_upper": round(c.delta_upper, 5),
            "delong_p_value": round(c.delong_p_value, 6),
        }


def evaluate(
    y: np.ndarray,
    model: ChallengerModel,
    challenger: ScoredModel,
    champion: ScoredModel | None,
    slices: Mapping[str, np.ndarray],
    cfg: gate.GateConfig,
) -> Evaluation:
    """Compare the challenger (``model``, scored as ``challenger``) with the champion on the
    same rows, decide, and write the report.

    The AUC difference gets a paired-bootstrap interval and DeLong's test; each slice
    gets both models' AUC and the delta; ``gate.decide`` reads those numbers.
    """
    scored = [challenger] if champion is None else [challenger, champion]
    table = slice_table(y, scored, slices)
    comparison = None
    slice_deltas: dict[str, float | None] = {}
    if champion is not None:
        comparison = metrics.paired_bootstrap_auc_delta(
            y,
            challenger.scores,
            champion.scores,
            n_resamples=cfg.n_resamples,
            level=cfg.level,
            seed=cfg.seed,
        )
        slice_deltas = dict(zip(table["slice"], table["delta"], strict=True))
    decision = gate.decide(comparison, model.checks_passed, slice_deltas, cfg)
    record = EvaluationDecision(
        promote=decision.promote,
        reason=decision.reason,
        challenger_version=model.version,
        challenger_model_uri=model.model_uri,
        champion_version=None if champion is None else champion.version,
        holdout_hash=model.holdout_hash,
        rule=cfg.mode,
    )
    text = render(y, decision, comparison, scored, table, model.holdout_hash, cfg)
    return Evaluation(record, decision, comparison, table, text, plots_png(y, scored))


def slice_table(
    y: np.ndarray, scored: list[ScoredModel], slices: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """AUC per slice for each model, and the challenger-minus-champion delta."""
    results = [metrics.slice_aucs((y, m.scores), slices) for m in scored]
    table = pd.DataFrame(
        {
            "slice": [r.name for r in results[0]],
            "rows": [r.n for r in results[0]],
            "challenger_auc": [r.auc for r in results[0]],
        }
    )
    if len(results) == 2:
        table["champion_auc"] = [r.auc for r in results[1]]
        table["delta"] = table["slice"].map(gate.slice_auc_deltas(results[0], results[1]))
    else:
        table["delta"] = None
    table["note"] = [r.skipped_reason or "" for r in results[0]]
    return table


def render(
    y: np.ndarray,
    decision: gate.Decision,
    comparison: metrics.PairedComparison | None,
    scored: list[ScoredModel],
    slice_table: pd.DataFrame,
    holdout_hash: str,
    cfg: gate.GateConfig,
) -> str:
    """The report's markdown (plots are appended separately)."""
    verdict = "PROMOTE the challenger" if decision.promote else "KEEP the champion"
    lines = [
        f"# Evaluation report: {verdict}",
        "",
        f"**Decision:** {verdict}. {decision.reason}",
        "",
        f"Rule: `{cfg.mode}` (min_delta {cfg.min_delta}, slice tolerance {cfg.slice_tolerance}, "
        f"{cfg.level:.0%} interval, {cfg.n_resamples} resamples).",
        decision.power_text(),
        f"Holdout: {len(y)} rows, {int(y.sum())} churners, hash `{holdout_hash[:16]}`; "
        "both models scored in this run on the same rows.",
        "",
        "## Models",
        "",
        f"| model | AUC | {cfg.level:.0%} CI | MLflow run |",
        "|---|---|---|---|",
    ]
    for m in scored:
        ci = metrics.bootstrap_auc_ci(
            y, m.scores, n_resamples=cfg.n_resamples, level=cfg.level, seed=cfg.seed
        )
        lines.append(
            f"| {m.label} | {ci.point:.4f} | {ci.lower:.4f} - {ci.upper:.4f} | [run]({m.run_url}) |"
        )
    if comparison is not None:
        lines += [
            "",
            "## Paired comparison (challenger - champion)",
            "",
            f"- AUC delta **{comparison.delta:+.4f}**, {cfg.level:.0%} paired-bootstrap interval "
            f"**[{comparison.delta_lower:+.4f}, {comparison.delta_upper:+.4f}]**",
            f"- DeLong: z = {comparison.delong_z:.3f}, two-sided p = {comparison.delong_p_value:.4g}",
        ]
    else:
        lines += ["", "No champion is registered yet: there is nothing to compare against."]
    lines += ["", "## Slices", "", markdown_table(slice_table.round(4))]
    return "\n".join(lines)
