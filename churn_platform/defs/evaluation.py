"""The promotion gate: champion vs challenger on the same holdout, decided on an interval."""

from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core import gate, metrics, report, training
from churn_platform.core import records as r
from churn_platform.core import schema as s
from churn_platform.defs.common import GROUP, OWNERS, config_from
from churn_platform.resources.mlflow_registry import MlflowRegistry

ASSET = "evaluation_report"


class GateSettings(config_from(gate.GateConfig)):  # type: ignore[misc]
    """How the gate decides (the fields of ``core.gate.GateConfig``)."""


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            r.PROMOTION_GATE,
            asset=ASSET,
            description="Passes when the challenger is promoted; a 'keep' is a normal outcome, shown as WARN.",
        )
    ],
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: GateSettings,
    mlflow_registry: MlflowRegistry,
    challenger_model: r.ChallengerModel,
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
    cfg: gate.GateConfig = config.to_core(gate.GateConfig)
    challenger = _scored(mlflow_registry, r.CHALLENGER, challenger_model.version, holdout_set)
    champion_version = mlflow_registry.alias_version(r.CHAMPION)
    if champion_version == challenger_model.version:
        champion_version = None  # re-evaluating the serving model against itself says nothing
    champion = (
        _scored(mlflow_registry, r.CHAMPION, champion_version, holdout_set)
        if champion_version
        else None
    )
    y = holdout_set[s.TARGET].astype(int).to_numpy()
    found = report.evaluate(
        y, challenger_model, challenger, champion, metrics.default_slices(holdout_set), cfg
    )
    decision = found.record
    run_id = challenger_model.run_id
    mlflow_registry.log_run_artifact(run_id, "evaluation_report.md", found.markdown)
    for name, png in found.plots.items():
        mlflow_registry.log_run_artifact(run_id, name, png)
    mlflow_registry.set_version_tags(
        decision.challenger_version, {r.TAG_GATE_DECISION: decision.verdict}
    )
    context.log.info(f"gate: {decision.verdict.upper()} - {decision.reason}")

    yield dg.AssetCheckResult(
        check_name=r.PROMOTION_GATE,
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "decision": decision.verdict,
            "reason": decision.reason,
            "rule": cfg.mode,
            "minimum_detectable_gain": found.decision.minimum_detectable_gain
            if found.decision.minimum_detectable_gain is not None
            else "n/a (no champion)",
        },
    )
    plots = "\n\n".join(report.embed_png(p, n) for n, p in found.plots.items())
    meta: dict[str, Any] = {
        "decision": decision.verdict,
        "reason": decision.reason,
        "challenger_version": decision.challenger_version,
        "champion_version": champion_version or "none",
        "holdout_hash": decision.holdout_hash,
        "holdout_rows": len(y),
        "report": dg.MetadataValue.md(found.markdown + "\n\n" + plots),
        "challenger_run": dg.MetadataValue.url(challenger.run_url),
        **found.summary(),
    }
    if champion is not None:
        meta["champion_run"] = dg.MetadataValue.url(champion.run_url)
    yield dg.Output(decision, metadata=meta)


def _scored(
    registry: MlflowRegistry, role: str, version: str, holdout: pd.DataFrame
) -> report.ScoredModel:
    """A registered version's scores on the holdout, labelled with its role."""
    return report.ScoredModel(
        label=f"{role} v{version}",
        version=version,
        scores=training.predict_proba(registry.load_model(version), holdout),
        run_url=registry.version_run_url(version),
    )
