"""Staging with integration checks, then production through a canary with automatic rollback,
for one model. ``build(model)`` makes the two assets."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd
import pydantic

from churn_platform import runs
from churn_platform.config import ModelConfig
from churn_platform.core import canary, deployment_step, release, training
from churn_platform.core import records as r
from churn_platform.defs.common import (
    asset_args,
    asset_key,
    check_result,
    check_specs,
    config_from,
    model_resource,
    model_resource_keys,
)
from churn_platform.resources.bases import DeploymentResource
from churn_platform.resources.metrics_source import MetricsResource, PrometheusMetrics
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.release_probes import ReleaseProbes

STAGING = "staging_deployment"
PRODUCTION = "production_deployment"
DEPLOYMENT_POOL = "churn_deployment"  # the default model's pool (limit 1 in dagster.yaml)


def deployment_pool(model: ModelConfig) -> str:
    """``<model>_deployment``: one deployment step of a model at a time (every pool's limit is
    1 in dagster.yaml); models deploy to their own routes, so they do not wait for each other."""
    return f"{model.name}_deployment"


TRAFFIC_ROWS = 500  # holdout rows replayed as synthetic canary traffic (they cycle)
STAGING_CHECKS = {
    r.HEALTH: "GET /health answers 200 once the model is loaded.",
    r.ENVIRONMENT_PARITY: "The server's Python and packages match the model's logged pins.",
    r.API_CONTRACT: "Valid records get probabilities; a missing column gets a 4xx naming it.",
    r.LATENCY: "p95 latency of single-row predictions stays under the bound.",
    r.ONLINE_OFFLINE_PARITY: "The server's probabilities equal the offline pipeline's for the same rows.",
}


class StagingConfig(config_from(release.StagingChecks)):  # type: ignore[misc]
    """Bounds of the staging integration checks (the fields of ``core.release.StagingChecks``)."""


# an asset setting, not the canary's: the local canary needs requests to judge
SYNTHETIC_TRAFFIC = {
    "synthetic_traffic_rps": (
        float,
        25.0,
        "requests/s of holdout rows replayed through the local router during the canary, "
        "so the analysis has requests to judge; 0 turns it off",
    )
}


RELEASE_MODE, ROLLBACK_MODE = deployment_step.RELEASE_MODE, deployment_step.ROLLBACK_MODE
ROLLBACK_SETTINGS = {
    "mode": (
        str,
        RELEASE_MODE,
        "'release': the staged candidate through the canary; 'rollback': all traffic to "
        "`previous` (or to_version) at once and the aliases swapped (the churn_rollback job)",
    ),
    "to_version": (
        str,
        "",
        "rollback mode: the version to serve (default: the `previous` alias); started from "
        "the registry when it no longer runs",
    ),
    "reason": (str, "", "rollback mode: why (recorded in the metadata and the version's tag)"),
}


_PRODUCTION_FIELDS = config_from(
    canary.CanaryConfig, extra={**SYNTHETIC_TRAFFIC, **ROLLBACK_SETTINGS}
)


class ProductionConfig(_PRODUCTION_FIELDS):  # type: ignore[misc,valid-type]
    """The canary (the fields of ``core.canary.CanaryConfig``), the local demo load, and
    rollback mode (``mode: rollback``, optional ``to_version`` and ``reason``)."""


def production_config(model: ModelConfig) -> type[ProductionConfig]:
    """``ProductionConfig`` with ``schema_change`` defaulting to ``model``'s setting
    (``CHURN_SCHEMA_CHANGE``, read in config.py): the launchpad shows the default in effect."""
    described = ProductionConfig.model_fields["schema_change"]
    return pydantic.create_model(
        f"ProductionConfig_{model.name}",
        __base__=ProductionConfig,
        __module__=__name__,
        schema_change=(
            canary.SchemaChangeMode,
            pydantic.Field(default=model.schema_change, description=described.description),
        ),
    )


def build_staging(model: ModelConfig) -> dg.AssetsDefinition:
    """``model``'s ``staging_deployment`` asset."""

    @dg.asset(
        **asset_args(model, STAGING, "evaluation_report", "holdout_set"),
        kinds={"python"},
        pool=deployment_pool(model),
        check_specs=check_specs(model, STAGING, STAGING_CHECKS),
        required_resource_keys={
            "release_probes",
            *model_resource_keys(model, "mlflow_registry", "deployment"),
        },
    )
    def staging_deployment(
        context: dg.AssetExecutionContext,
        config: StagingConfig,
        evaluation_report: r.EvaluationDecision,
        holdout_set: pd.DataFrame,
    ):
        """The challenger served in staging beside the champion, at 0% of staging traffic.

        Integration checks (layer 4) run against the challenger's own server: health, the
        API contract, a latency bound, and online predictions equal to offline ones for the
        same holdout rows. When the gate said "keep", nothing is deployed and the asset says
        why. A failed check retires the challenger from staging and stops the run. Staging
        is first reconciled with its state file and the registry (`repaired` in metadata).
        """
        yield from _stage(context, config, model, evaluation_report, holdout_set)

    return staging_deployment


def _stage(
    context: dg.AssetExecutionContext,
    config: StagingConfig,
    model: ModelConfig,
    evaluation_report: r.EvaluationDecision,
    holdout_set: pd.DataFrame,
):
    mlflow_registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    deployment: DeploymentResource = model_resource(context, model, "deployment")
    release_probes: ReleaseProbes = context.resources.release_probes
    with _exclusive(context, model):
        if not evaluation_report.promote:
            yield from _nothing_staged(mlflow_registry, deployment, evaluation_report, model)
            return
        bounds: release.StagingChecks = config.to_core(release.StagingChecks)
        rows = holdout_set.head(bounds.parity_rows)
        offline = training.predict_proba(
            mlflow_registry.load_model(evaluation_report.challenger_version), rows
        )
        staged = release.stage(
            deployment.target(),
            mlflow_registry,
            evaluation_report,
            lambda served: release_probes.integration_checks(
                served.url,
                rows,
                offline,
                bounds,
                release_probes.model_spec(served.model_uri, mlflow_registry.uri()),
                release_probes.model_environment(served.model_uri, mlflow_registry.uri()),
            ),
        )
        for outcome in staged.outcomes:
            yield check_result(outcome, asset_key(model, STAGING))
        if staged.failed:
            raise dg.Failure(
                description=deployment_step.staging_failure(staged),
                metadata={
                    "candidate": staged.served.version,
                    "failed_checks": ", ".join(staged.failed),
                },
            )
        meta = deployment_step.staging_metadata(staged)
        meta["candidate_url"] = dg.MetadataValue.url(meta["candidate_url"])
        meta["staging_endpoint"] = _url(meta["staging_endpoint"])
        yield dg.Output(staged.record, metadata=meta)


def _nothing_staged(
    registry: MlflowRegistry,
    deployment: DeploymentResource,
    decision: r.EvaluationDecision,
    model: ModelConfig,
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """The gate kept the champion: every staging check passes as a deliberate no-op, with
    the reason, and staging is only reconciled."""
    for name in STAGING_CHECKS:
        yield dg.AssetCheckResult(
            asset_key=asset_key(model, STAGING),
            check_name=name,
            passed=True,
            metadata={"skipped": deployment_step.KEPT_CHAMPION},
        )
    repairs = release.reconcile(deployment.target(), registry, r.STAGING)
    yield dg.Output(
        release.nothing_staged(decision),
        metadata={
            "action": r.NO_ACTION,
            "reason": f"champion kept: {decision.reason}",
            "repaired": deployment_step.lines(tuple(repairs)),
        },
    )


def build_production(model: ModelConfig) -> dg.AssetsDefinition:
    """``model``'s ``production_deployment`` asset."""
    key = asset_key(model, PRODUCTION)
    config_type = production_config(model)

    @dg.asset(
        **asset_args(model, PRODUCTION, STAGING, "holdout_set"),
        kinds={"prometheus"},
        pool=deployment_pool(model),
        check_specs=[
            dg.AssetCheckSpec(
                r.CANARY_ANALYSIS,
                asset=key,
                description="The canary passed every analysis step; a rollback fails this check.",
            ),
            dg.AssetCheckSpec(
                r.REGISTRY_ALIASES,
                asset=key,
                blocking=True,
                description="The registry's aliases follow the traffic (retried; a failure "
                "names the repair command).",
            ),
        ],
        required_resource_keys={
            "metrics_source",
            "release_probes",
            *model_resource_keys(model, "mlflow_registry", "deployment"),
        },
    )
    def production_deployment(
        context: dg.AssetExecutionContext,
        config: config_type,  # type: ignore[valid-type]
        staging_deployment: r.StagingResult,
        holdout_set: pd.DataFrame,
    ):
        """Production: the staged challenger through a shadow step, then a canary,
        5% -> 25% -> 100%.

        In the shadow step the router copies client requests to the challenger and answers
        every client with the champion; a challenger failing requests, slower, or ranking
        customers unlike the champion stops there, before any client reaches it. At each step an analysis window reads the canary's error rate (Prometheus when
        configured, else the servers' own /metrics) and needs a minimum request count, so
        silence is not success. A breach, or no data, puts all traffic back on the champion,
        which never stopped running, and retires the canary; aliases stay as they were.
        Success moves `champion` to the new version and `previous` to the old one (retried;
        if the registry still refuses, the blocking `registry_aliases` check fails and names
        the repair command). Every transition is in the metadata. Materialise this asset by
        hand (the approval step) unless automatic release is configured.

        Before anything moves, production is reconciled with its state file and the registry
        (dead router or servers restarted, leftover canary weights back on the champion; the
        `repaired` metadata lists it), and an interrupted canary always ends on the champion.
        The candidate is the one this run staged (another run's newer one is named in `notes`,
        never shipped). `weights` is read from the running router, the aliases from the
        registry; `disagreement` appears when they differ. Config `mode: rollback` (the
        `churn_rollback` job, `python -m churn_platform rollback [--to VERSION]`) skips the
        canary: all traffic to `previous` (or `to_version`) and the aliases swapped.

        A challenger requiring request fields the champion's clients do not send (their
        logged specs compared) is refused with the field names (`schema_change` metadata;
        nothing moves), or with `schema_change: cutover` goes through the shadow step and
        then to 100% at once.
        """
        yield from _produce(context, config, model, staging_deployment, holdout_set)

    return production_deployment


def _produce(
    context: dg.AssetExecutionContext,
    config: ProductionConfig,
    model: ModelConfig,
    staging_deployment: r.StagingResult,
    holdout_set: pd.DataFrame,
):
    mlflow_registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    deployment: DeploymentResource = model_resource(context, model, "deployment")
    metrics_source: MetricsResource = context.resources.metrics_source
    release_probes: ReleaseProbes = context.resources.release_probes
    with _exclusive(context, model):
        target = deployment.target()
        problem = deployment_step.mode_problem(config.mode)
        if problem:
            raise dg.Failure(description=problem)
        if config.mode == ROLLBACK_MODE:
            done = _rollback(context, config, target, mlflow_registry)
            yield dg.AssetCheckResult(
                check_name=r.CANARY_ANALYSIS,
                passed=True,
                metadata={"outcome": "rollback on demand: no canary", "reason": done.record.reason},
            )
        else:
            done = _release(
                context,
                model,
                config,
                target,
                mlflow_registry,
                metrics_source,
                release_probes,
                staging_deployment,
                holdout_set,
            )
            yield _canary_check(done)
        yield _alias_check(done)
        yield dg.Output(done.record, metadata=_release_metadata(target, mlflow_registry, done))


def _rollback(
    context: dg.AssetExecutionContext,
    config: ProductionConfig,
    target: Any,
    registry: MlflowRegistry,
) -> release.Release:
    """All traffic to ``previous`` (or ``to_version``) and the aliases swapped, no canary."""
    try:
        done = release.rollback(target, registry, config.to_version or None, reason=config.reason)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    for line in done.repairs:
        context.log.warning(f"repaired: {line}")
    return done


def _release(
    context: dg.AssetExecutionContext,
    model: ModelConfig,
    config: ProductionConfig,
    target: Any,
    registry: MlflowRegistry,
    metrics_source: MetricsResource,
    probes: ReleaseProbes,
    staging: r.StagingResult,
    holdout: pd.DataFrame,
) -> release.Release:
    """The staged candidate (this run's own) through the canary, its steps logged."""
    staged, notes = release.select_candidate(
        _staged_by_this_run(context, registry, model),
        staging,
        registry.alias_version(r.CHALLENGER),
    )
    for note in notes:
        context.log.warning(note)
    metrics = metrics_source.source(
        lambda: {v.version: v.url for v in target.state(r.PRODUCTION).versions},
        # the router's 502s are the version's errors
        router_url=lambda: target.state(r.PRODUCTION).endpoint,
    )
    done = release.release(
        target,
        registry,
        metrics,
        staged,
        config.to_core(canary.CanaryConfig),
        during_canary=lambda state: _canary_load(
            context,
            probes,
            metrics,
            staged.candidate or "",
            holdout.head(TRAFFIC_ROWS),
            config.synthetic_traffic_rps if state.endpoint else 0.0,
            state.endpoint or "",
            staged.model_uri or "",
            registry.uri(),
        ),
        on_transition=lambda t: context.log.info(
            f"canary {t.from_state} -> {t.to_state} weights={t.weights}: {t.reason}"
        ),
        log=context.log.warning,
        offline_scores=lambda champion, candidate: (
            _holdout_scores(registry, champion, holdout.head(TRAFFIC_ROWS)),
            _holdout_scores(registry, candidate, holdout.head(TRAFFIC_ROWS)),
        ),
    )
    done = replace(done, notes=notes)
    if done.canary is not None:
        context.log.info(done.canary.summary())
    elif done.record.action == r.REFUSED:
        context.log.warning(f"release refused: {done.record.reason}")
    return done


def _holdout_scores(registry: MlflowRegistry, version: str, rows: pd.DataFrame) -> Any:
    """``version``'s churn probabilities on ``rows`` (the rows the canary's traffic replays)."""
    return training.predict_proba(registry.load_model(version), rows)


def _exclusive(
    context: dg.AssetExecutionContext, model: ModelConfig
) -> AbstractContextManager[None]:
    """The model's deployment pool held alone across processes (Dagster's own claim is not
    atomic on a SQLite instance; see ``runs.exclusive_step``)."""
    return runs.exclusive_step(
        context.instance,
        deployment_pool(model),
        {
            "run": context.run.run_id,
            "job": context.job_name,
            "asset": context.asset_key.to_user_string(),
        },
        context.log.info,
    )


def _staged_by_this_run(
    context: dg.AssetExecutionContext, registry: MlflowRegistry, model: ModelConfig
) -> r.StagingResult | None:
    """What this run's own staging step staged (from its materialisation's metadata), or
    None when this run did not stage (e.g. the churn_release approval job). The stored
    ``staging_deployment`` value is the latest of any run, so a concurrent run could have
    replaced it."""
    records = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in reversed(records):
        materialization = record.event_log_entry.asset_materialization
        if materialization is None or materialization.asset_key != asset_key(model, STAGING):
            continue
        return deployment_step.staged_from_metadata(
            {k: str(v.value) for k, v in materialization.metadata.items()}, registry.model_uri
        )
    return None


def _alias_check(done: release.Release) -> dg.AssetCheckResult:
    """Blocking: the aliases moved with the traffic, or the command that makes them."""
    if done.alias_error is None:
        return dg.AssetCheckResult(check_name=r.REGISTRY_ALIASES, passed=True)
    return dg.AssetCheckResult(
        check_name=r.REGISTRY_ALIASES,
        passed=False,
        metadata={"error": done.alias_error, "repair": done.repair or ""},
        description=f"traffic moved but the registry did not follow; repair: {done.repair}",
    )


def _release_metadata(
    target: Any, registry: MlflowRegistry, done: release.Release
) -> dict[str, Any]:
    """The release as the UI shows it: what happened, then what serves now, read from the
    running router and the registry (not from what this step believes), with any disagreement."""
    live = target.live_weights(r.PRODUCTION) if hasattr(target, "live_weights") else None
    metadata = deployment_step.release_metadata(
        done, live, registry.alias_version(r.CHAMPION), registry.alias_version(r.PREVIOUS)
    )
    metadata = _transitions_as_markdown(metadata)
    metadata["production_endpoint"] = _url(metadata["production_endpoint"])
    return metadata


@contextmanager
def _canary_load(
    context: dg.AssetExecutionContext,
    probes: ReleaseProbes,
    metrics: object,
    candidate: str,
    rows: pd.DataFrame,
    rate: float,
    endpoint: str,
    model_uri: str,
    tracking_uri: str,
) -> Iterator[None]:
    """While the canary runs: ``rate`` requests/s of ``rows`` through the router (a laptop
    has no users; 0: none), shaped by the candidate's spec (``model_uri``), and a wait until
    Prometheus has scraped the candidate so the first window has data."""
    traffic = None
    if rate > 0:
        spec = probes.model_spec(model_uri, tracking_uri)
        traffic = probes.synthetic_traffic(endpoint, rows, rate, spec)
    with traffic or nullcontext():
        if isinstance(metrics, PrometheusMetrics) and not metrics.wait_until_scraped(candidate):
            context.log.warning(
                f"Prometheus has not scraped v{candidate} yet; the first window may read no data"
            )
        yield
    if traffic is not None:
        context.log.info(
            f"synthetic traffic: {traffic.sent} requests sent, {traffic.failed} transport errors"
        )


def _canary_check(done: release.Release) -> dg.AssetCheckResult:
    """The canary's outcome as a check (passed, with the reason, when nothing was released)."""
    metadata = _transitions_as_markdown(deployment_step.canary_metadata(done))
    return dg.AssetCheckResult(
        check_name=r.CANARY_ANALYSIS,
        passed=deployment_step.canary_passed(done),
        metadata=metadata,
    )


def _transitions_as_markdown(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with the canary's transitions (when present) shown as markdown."""
    if "transitions" in metadata:
        metadata["transitions"] = dg.MetadataValue.md(metadata["transitions"])
    return metadata


def _url(endpoint: str | None) -> Any:
    """An environment's endpoint as a link ('n/a' when it has none)."""
    return dg.MetadataValue.url(endpoint) if endpoint else "n/a"


def build(model: ModelConfig) -> list[dg.AssetsDefinition]:
    """``model``'s deployment assets: staging, then production."""
    return [build_staging(model), build_production(model)]
