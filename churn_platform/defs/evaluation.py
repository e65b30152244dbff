"""The promotion gate: champion vs challenger on the same holdout, decided on an interval."""

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform import settings
from churn_platform.core import gate, metrics, report, training
from churn_platform.core import records as r
from churn_platform.core.spec import Spec
from churn_platform.defs.common import GROUP, OWNERS, config_from, upstream_metadata
from churn_platform.defs.data import SNAPSHOT_ASSET, WEEK_KEY
from churn_platform.resources.data_source import DataSourceResource
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
    data_source: DataSourceResource,
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

    Each model is scored with the columns of its own spec (logged with the model). When
    the champion was trained on an older spec with a feature the current spec dropped, that
    column is mapped from the snapshot's source rows through the champion's spec; the
    report lists how the two specs differ. If the champion's columns cannot be produced,
    the report says why and the champion is kept (never a blind promotion).
    """
    cfg: gate.GateConfig = config.to_core(gate.GateConfig)
    current = settings.current_spec()
    challenger_spec = mlflow_registry.spec_of_version(challenger_model.version)
    challenger_pipeline = mlflow_registry.load_model(challenger_model.version)
    challenger_inputs = report.inputs_for_spec(
        holdout_set, current, challenger_spec, _fitted_columns(challenger_pipeline, challenger_spec)
    )
    if challenger_inputs.frame is None:  # trained on this data: only a broken run gets here
        raise dg.Failure(
            description=f"challenger v{challenger_model.version} cannot be scored on the "
            f"holdout: {challenger_inputs.problem}"
        )
    challenger = _scored(
        mlflow_registry,
        r.CHALLENGER,
        challenger_model.version,
        challenger_pipeline,
        challenger_inputs.frame,
    )
    champion_version = mlflow_registry.alias_version(r.CHAMPION)
    if champion_version == challenger_model.version:
        champion_version = None  # re-evaluating the serving model against itself says nothing
    champion = None
    specs = report.SpecComparison(challenger=challenger_spec)
    if champion_version:
        champion_spec = mlflow_registry.spec_of_version(champion_version)
        champion_pipeline = mlflow_registry.load_model(champion_version)
        inputs = report.inputs_for_spec(
            holdout_set,
            current,
            champion_spec,
            _fitted_columns(champion_pipeline, champion_spec),
            _source_rows(context, data_source),
        )
        specs = report.SpecComparison(
            challenger=challenger_spec,
            champion=champion_spec,
            derived=inputs.derived,
            champion_problem=inputs.problem,
        )
        if inputs.frame is not None:
            champion = _scored(
                mlflow_registry, r.CHAMPION, champion_version, champion_pipeline, inputs.frame
            )
        else:
            context.log.warning(f"champion v{champion_version} cannot be scored: {inputs.problem}")
    y = holdout_set[current.target_column].astype(int).to_numpy()
    found = report.evaluate(
        y,
        challenger_model,
        challenger,
        champion,
        metrics.default_slices(holdout_set, current),
        cfg,
        specs=specs,
        unscored_champion=champion_version if champion_version and champion is None else None,
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
        "spec_hash": current.short_hash,
        "challenger_spec_hash": challenger_spec.short_hash,
        "champion_spec_hash": specs.champion.short_hash if specs.champion else "none",
        "spec_differences": "; ".join(specs.differences()) or "none",
        "report": dg.MetadataValue.md(found.markdown + "\n\n" + plots),
        "challenger_run": dg.MetadataValue.url(challenger.run_url),
        **found.summary(),
    }
    if champion is not None:
        meta["champion_run"] = dg.MetadataValue.url(champion.run_url)
    yield dg.Output(decision, metadata=meta)


def _scored(
    registry: MlflowRegistry, role: str, version: str, pipeline: Any, rows: pd.DataFrame
) -> report.ScoredModel:
    """A registered version's scores on the holdout rows, labelled with its role."""
    return report.ScoredModel(
        label=f"{role} v{version}",
        version=version,
        scores=training.predict_proba(pipeline, rows),
        run_url=registry.version_run_url(version),
    )


def _fitted_columns(pipeline: Any, spec: Spec) -> list[str]:
    """The columns ``pipeline`` was fitted on (its spec's features when it does not say)."""
    names = getattr(pipeline, "feature_names_in_", None)
    return [str(c) for c in names] if names is not None else list(spec.feature_names)


def _source_rows(
    context: dg.AssetExecutionContext, data_source: DataSourceResource
) -> Callable[[], pd.DataFrame]:
    """Re-reads the raw rows of the snapshot the holdout came from (same synthetic week);
    ``report.inputs_for_spec`` checks they are the same rows before using them."""
    week = upstream_metadata(context, SNAPSHOT_ASSET, WEEK_KEY)
    source = data_source.dated(int(week)) if week is not None and week.isdigit() else data_source
    return lambda: source.load().frame
