"""The promotion gate of one model: champion vs challenger on the same holdout, decided on an
interval. ``build(model)`` makes the asset."""

from collections.abc import Callable

import dagster as dg
import pandas as pd

from churn_platform.config import ModelConfig
from churn_platform.core import evaluation_step, gate, report
from churn_platform.core import records as r
from churn_platform.defs.common import (
    asset_args,
    asset_key,
    config_from,
    model_resource,
    model_resource_keys,
    upstream_metadata,
)
from churn_platform.defs.data import HOLDOUT_ASSET
from churn_platform.resources.data_source import DataSourceResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.week_source import partition_source

ASSET = "evaluation_report"


class GateSettings(config_from(gate.GateConfig)):  # type: ignore[misc]
    """How the gate decides (the fields of ``core.gate.GateConfig``)."""


def build(model: ModelConfig) -> list[dg.AssetsDefinition]:
    """``model``'s ``evaluation_report`` asset."""

    @dg.asset(
        **asset_args(model, ASSET, "challenger_model", "holdout_set"),
        kinds={"mlflow"},
        check_specs=[
            dg.AssetCheckSpec(
                r.PROMOTION_GATE,
                asset=asset_key(model, ASSET),
                description="Passes when the challenger is promoted; a 'keep' is a normal "
                "outcome, shown as WARN.",
            )
        ],
        required_resource_keys=model_resource_keys(model, "mlflow_registry", "data_source"),
    )
    def evaluation_report(
        context: dg.AssetExecutionContext,
        config: GateSettings,
        challenger_model: r.ChallengerModel,
        holdout_set: pd.DataFrame,
    ):
        """Champion vs challenger on the same fixed holdout, and the promote/keep decision.

        Both models are scored now on the same rows (the champion is re-scored every time,
        never compared with an old number). The AUC difference gets a paired-bootstrap
        interval and DeLong's test; the challenger is promoted only when the interval's
        lower bound clears `min_delta`, its model checks passed and no slice regressed
        beyond the tolerance. "Keep" is a normal outcome: the run succeeds and deployment
        does nothing. The report (markdown, ROC and calibration plots) is also stored in
        the challenger's MLflow run.

        Each model is scored with the columns of its own spec (logged with the model). When
        the champion was trained on an older spec with a feature the current spec dropped,
        that column is mapped from the snapshot's source rows through the champion's spec;
        the report lists how the two specs differ. If the champion's columns cannot be
        produced, the report says why and the champion is kept (never a blind promotion).
        """
        yield from _evaluate(context, config, model, challenger_model, holdout_set)

    return [evaluation_report]


def _evaluate(
    context: dg.AssetExecutionContext,
    config: GateSettings,
    model: ModelConfig,
    challenger_model: r.ChallengerModel,
    holdout_set: pd.DataFrame,
):
    mlflow_registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    data_source: DataSourceResource = model_resource(context, model, "data_source")
    cfg: gate.GateConfig = config.to_core(gate.GateConfig)
    current = model.spec
    try:
        scoring = evaluation_step.score_models(
            mlflow_registry,
            holdout_set,
            current,
            challenger_model.version,
            _source_rows(context, data_source, model),
        )
    except evaluation_step.UnscorableChallenger as exc:  # only a broken run gets here
        raise dg.Failure(description=str(exc)) from exc
    if scoring.champion_warning:
        context.log.warning(scoring.champion_warning)
    found = evaluation_step.judge(holdout_set, current, challenger_model, scoring, cfg)
    decision = found.record
    _store_report(mlflow_registry, challenger_model.run_id, found)
    context.log.info(f"gate: {decision.verdict.upper()} - {decision.reason}")
    yield dg.AssetCheckResult(
        check_name=r.PROMOTION_GATE,
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=evaluation_step.gate_metadata(found, cfg),
    )
    meta = evaluation_step.report_metadata(found, scoring, current, len(holdout_set))
    meta["report"] = dg.MetadataValue.md(meta["report"])
    for link in ("challenger_run", "champion_run"):
        if link in meta:
            meta[link] = dg.MetadataValue.url(meta[link])
    yield dg.Output(decision, metadata=meta)


def _store_report(registry: MlflowRegistry, run_id: str, found: report.Evaluation) -> None:
    """The report and its plots into the challenger's run, the verdict onto its version."""
    registry.log_run_artifact(run_id, "evaluation_report.md", found.markdown)
    for name, png in found.plots.items():
        registry.log_run_artifact(run_id, name, png)
    decision = found.record
    registry.set_version_tags(decision.challenger_version, {r.TAG_GATE_DECISION: decision.verdict})


def _source_rows(
    context: dg.AssetExecutionContext, data_source: DataSourceResource, model: ModelConfig
) -> Callable[[], pd.DataFrame]:
    """Re-reads the raw rows of the snapshot the holdout came from (its week), when called;
    ``report.inputs_for_spec`` checks they are the same rows before using them."""

    def load() -> pd.DataFrame:
        week = upstream_metadata(context, asset_key(model, HOLDOUT_ASSET), "week")
        if not week:
            return data_source.load().frame
        return partition_source(data_source, week, model.source.scores_query).load().frame

    return load
