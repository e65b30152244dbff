"""The promotion gate: champion vs challenger on the same holdout, decided on an interval."""

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from churn_platform.core import gate, metrics, report, training
from churn_platform.core import schema as s
from churn_platform.defs.common import GROUP, OWNERS, md_table
from churn_platform.resources.mlflow_registry import MlflowRegistry

ASSET = "evaluation_report"


class GateSettings(dg.Config):
    """How the gate decides. ``mode``: 'interval' (default) or 'point' (the seed's rule)."""

    mode: str = "interval"
    min_delta: float = 0.005
    slice_tolerance: float = 0.02
    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0

    def gate_config(self) -> gate.GateConfig:
        """The core gate config (validated there)."""
        return gate.GateConfig(
            mode=self.mode,
            min_delta=self.min_delta,
            slice_tolerance=self.slice_tolerance,
            level=self.level,
            n_resamples=self.n_resamples,
            seed=self.seed,
        )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            "promotion_gate",
            asset=ASSET,
            description="Passes when the challenger is promoted; a 'keep' is a normal outcome, shown as WARN.",
        )
    ],
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: GateSettings,
    mlflow_registry: MlflowRegistry,
    challenger_model: dict[str, Any],
    holdout_set: pd.DataFrame,
):
    """Champion vs challenger on the same fixed holdout, and the promote/keep decision.

    Both models are scored now on the same rows (the champion is re-scored every time,
    never compared with an old number). The AUC difference gets a paired-bootstrap
    interval and DeLong's test; the challenger is promoted only when the interval's lower
    bound clears `min_delta`, its model checks passed and no slice regressed beyond the
    tolerance. "Keep" is a normal outcome: the run succeeds and deployment does nothing.
    The report (markdown, ROC and calibration plots) is also stored in the challenger's
    MLflow run.
    """
    cfg = config.gate_config()
    y = holdout_set[s.TARGET].astype(int).to_numpy()
    challenger_version = challenger_model["version"]
    challenger = mlflow_registry.load_model(challenger_version)
    scored = [
        report.ScoredModel(
            label=f"challenger v{challenger_version}",
            version=challenger_version,
            scores=training.predict_proba(challenger, holdout_set),
            run_url=mlflow_registry.run_url(
                challenger_model["experiment_id"], challenger_model["run_id"]
            ),
        )
    ]
    champion_version = mlflow_registry.alias_version("champion")
    if champion_version == challenger_version:
        champion_version = None  # re-evaluating the serving model against itself says nothing
    if champion_version is not None:
        info = mlflow_registry.version_info(champion_version)
        run = mlflow_registry.client().get_run(info.run_id)
        scored.append(
            report.ScoredModel(
                label=f"champion v{champion_version}",
                version=champion_version,
                scores=training.predict_proba(
                    mlflow_registry.load_model(champion_version), holdout_set
                ),
                run_url=mlflow_registry.run_url(run.info.experiment_id, info.run_id),
            )
        )

    slices = metrics.default_slices(holdout_set)
    slice_table = _slice_table(y, scored, slices)
    comparison = None
    slice_deltas: dict[str, float | None] = {}
    if len(scored) == 2:
        comparison = metrics.paired_bootstrap_auc_delta(
            y,
            scored[0].scores,
            scored[1].scores,
            n_resamples=cfg.n_resamples,
            level=cfg.level,
            seed=cfg.seed,
        )
        slice_deltas = dict(zip(slice_table["slice"], slice_table["delta"], strict=True))
    decision = gate.decide(comparison, challenger_model["checks_passed"], slice_deltas, cfg)

    holdout_hash = challenger_model.get("holdout_hash", "unknown")
    plots = report.plots_png(y, scored)
    text = _render(y, decision, comparison, scored, slice_table, holdout_hash, cfg)
    mlflow_registry.log_run_artifact(challenger_model["run_id"], "evaluation_report.md", text)
    for name, png in plots.items():
        mlflow_registry.log_run_artifact(challenger_model["run_id"], name, png)
    mlflow_registry.set_version_tags(
        challenger_version, {"gate_decision": "promote" if decision.promote else "keep"}
    )
    context.log.info(f"gate: {'PROMOTE' if decision.promote else 'KEEP'} - {decision.reason}")

    yield dg.AssetCheckResult(
        check_name="promotion_gate",
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "decision": "promote" if decision.promote else "keep",
            "reason": decision.reason,
            "rule": cfg.mode,
        },
    )
    value = {
        "promote": decision.promote,
        "reason": decision.reason,
        "challenger_version": challenger_version,
        "challenger_model_uri": challenger_model["model_uri"],
        "champion_version": champion_version,
        "holdout_hash": holdout_hash,
        "rule": cfg.mode,
    }
    meta: dict[str, Any] = {
        "decision": "promote" if decision.promote else "keep",
        "reason": decision.reason,
        "challenger_version": challenger_version,
        "champion_version": champion_version or "none",
        "holdout_hash": holdout_hash,
        "holdout_rows": len(y),
        "report": dg.MetadataValue.md(
            text + "\n\n" + "\n\n".join(report.embed_png(p, n) for n, p in plots.items())
        ),
        "challenger_run": dg.MetadataValue.url(scored[0].run_url),
    }
    if comparison is not None:
        meta.update(
            {
                "auc_delta": round(comparison.delta, 5),
                "auc_delta_ci_lower": round(comparison.delta_lower, 5),
                "auc_delta_ci_upper": round(comparison.delta_upper, 5),
                "delong_p_value": round(comparison.delong_p_value, 6),
                "champion_run": dg.MetadataValue.url(scored[1].run_url),
            }
        )
    yield dg.Output(value, metadata=meta)


def _slice_table(
    y: np.ndarray, scored: list[report.ScoredModel], slices: dict[str, np.ndarray]
) -> pd.DataFrame:
    """AUC per slice for each model, and the challenger-minus-champion delta."""
    results = [metrics.slice_aucs((y, m.scores), slices, min_rows=30) for m in scored]
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


def _render(
    y: np.ndarray,
    decision: gate.Decision,
    comparison: metrics.PairedComparison | None,
    scored: list[report.ScoredModel],
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
    lines += ["", "## Slices", "", md_table(slice_table.round(4), max_rows=50)]
    return "\n".join(lines)
