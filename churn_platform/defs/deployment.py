"""Staging with integration checks, then production through a canary with automatic rollback."""

from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core import canary, training
from churn_platform.defs.common import GROUP, OWNERS, check_result, failed_names, md_table
from churn_platform.resources.bases import DeploymentResource
from churn_platform.resources.metrics import MetricsResource, PrometheusMetrics
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.serving import integration
from churn_platform.serving.traffic import TrafficGenerator

STAGING = "staging_deployment"
PRODUCTION = "production_deployment"
DEPLOYMENT_POOL = "churn_deployment"  # one deployment at a time (limit set in dagster.yaml)
STAGING_CHECKS = {
    "health": "GET /health answers 200 once the model is loaded.",
    "api_contract": "Valid records get probabilities; a missing column gets a 4xx naming it.",
    "latency": "p95 latency of single-row predictions stays under the bound.",
    "online_offline_parity": "The server's probabilities equal the offline pipeline's for the same rows.",
}


class StagingConfig(dg.Config):
    """Bounds of the staging integration checks."""

    latency_p95_ms: float = 250.0
    latency_requests: int = 50
    parity_rows: int = 200


class ProductionConfig(dg.Config):
    """The canary: traffic steps, analysis window and the error-rate bound."""

    steps: list[int] = [5, 25, 100]
    analysis_window_seconds: float = 15.0
    interval_seconds: float = 1.0
    max_error_rate: float = 0.05
    min_requests: int = 20
    synthetic_traffic_rps: float = 25.0  # local demo load through the router; 0 turns it off

    def canary_config(self) -> canary.CanaryConfig:
        """The core canary config (validated there)."""
        return canary.CanaryConfig(
            steps=tuple(self.steps),
            analysis_window_seconds=self.analysis_window_seconds,
            interval_seconds=self.interval_seconds,
            max_error_rate=self.max_error_rate,
            min_requests=self.min_requests,
        )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python"},
    pool=DEPLOYMENT_POOL,
    check_specs=[
        dg.AssetCheckSpec(n, asset=STAGING, blocking=True, description=d)
        for n, d in STAGING_CHECKS.items()
    ],
)
def staging_deployment(
    context: dg.AssetExecutionContext,
    config: StagingConfig,
    mlflow_registry: MlflowRegistry,
    deployment: DeploymentResource,
    evaluation_report: dict[str, Any],
    holdout_set: pd.DataFrame,
):
    """The challenger served in staging beside the champion, at 0% of staging traffic.

    Integration checks (layer 4) run against the challenger's own server: health, the API
    contract, a latency bound, and online predictions equal to offline ones for the same
    holdout rows. When the gate said "keep", nothing is deployed and the asset says why.
    A failed check retires the challenger from staging and stops the run.
    """
    if not evaluation_report["promote"]:
        yield from _skip_checks(
            STAGING, STAGING_CHECKS, "nothing deployed: the gate kept the champion"
        )
        yield dg.Output(
            {"action": "none", "reason": evaluation_report["reason"]},
            metadata={"action": "none", "reason": f"champion kept: {evaluation_report['reason']}"},
        )
        return
    target = deployment.target()
    candidate = evaluation_report["challenger_version"]
    champion = mlflow_registry.alias_version("champion")
    running = target.state("staging").weights()
    if champion and champion not in running:
        target.deploy("staging", champion, f"models:/{mlflow_registry.model_name}/{champion}")
    served = target.deploy("staging", candidate, evaluation_report["challenger_model_uri"])
    target.set_weights("staging", {champion: 100, candidate: 0} if champion else {candidate: 100})
    for version in target.state("staging").weights():  # earlier candidates: now at 0%
        if version not in (champion, candidate):
            target.retire("staging", version)

    rows = holdout_set.head(config.parity_rows)
    offline = training.predict_proba(mlflow_registry.load_model(candidate), rows)
    outcomes = [
        integration.health_check(served.url),
        integration.api_contract_check(served.url, rows),
        integration.latency_check(served.url, rows, config.latency_requests, config.latency_p95_ms),
        integration.parity_check(served.url, rows, offline),
    ]
    for outcome in outcomes:
        yield check_result(outcome, STAGING)
    failed = failed_names(outcomes)
    if failed:
        if champion:
            target.set_weights("staging", {champion: 100})
        target.retire("staging", candidate)
        raise dg.Failure(
            description=f"staging checks failed for version {candidate}: {', '.join(failed)}; "
            "the challenger was removed from staging and production is untouched",
            metadata={"candidate": candidate, "failed_checks": ", ".join(failed)},
        )
    state = target.state("staging")
    yield dg.Output(
        {
            "action": "deploy",
            "candidate": candidate,
            "model_uri": served.model_uri,
            "baseline": champion,
        },
        metadata={
            "action": "deployed to staging",
            "candidate_version": candidate,
            "candidate_url": dg.MetadataValue.url(served.url),
            "staging_endpoint": dg.MetadataValue.url(state.endpoint) if state.endpoint else "n/a",
            "weights": str(state.weights()),
        },
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"prometheus"},
    pool=DEPLOYMENT_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "canary_analysis",
            asset=PRODUCTION,
            description="The canary passed every analysis step; a rollback fails this check.",
        )
    ],
)
def production_deployment(
    context: dg.AssetExecutionContext,
    config: ProductionConfig,
    mlflow_registry: MlflowRegistry,
    deployment: DeploymentResource,
    metrics_source: MetricsResource,
    staging_deployment: dict[str, Any],
    holdout_set: pd.DataFrame,
):
    """Production: the staged challenger through a canary, 5% -> 25% -> 100%.

    At each step an analysis window reads the canary's error rate (Prometheus when
    configured, else the servers' own /metrics) and needs a minimum request count, so
    silence is not success. A breach, or no data, puts all traffic back on the champion,
    which never stopped running, and retires the canary; aliases stay as they were.
    Success moves `champion` to the new version and `previous` to the old one. Every
    transition is in the metadata. Materialise this asset by hand (the approval step)
    unless automatic release is configured.
    """
    candidate = staging_deployment.get("candidate")
    baseline = mlflow_registry.alias_version("champion")
    if staging_deployment.get("action") != "deploy" or candidate == baseline:
        reason = (
            f"version {candidate} is already the champion"
            if candidate and candidate == baseline
            else staging_deployment.get("reason", "nothing staged")
        )
        yield dg.AssetCheckResult(
            check_name="canary_analysis",
            passed=True,
            metadata={"outcome": "nothing to release", "reason": reason},
        )
        yield dg.Output(
            {"action": "none", "champion": baseline},
            metadata={"action": "none", "reason": reason},
        )
        return
    target = deployment.target()
    running = target.state("production").weights()
    if baseline and baseline not in running:
        context.log.warning(
            f"champion v{baseline} was not running in production; starting it first"
        )
        target.deploy("production", baseline, f"models:/{mlflow_registry.model_name}/{baseline}")
        target.set_weights("production", {baseline: 100})
    target.deploy("production", candidate, staging_deployment["model_uri"])
    state = target.state("production")
    metrics = metrics_source.source(
        lambda: {v.version: v.url for v in target.state("production").versions}
    )

    def log_transition(t: canary.Transition) -> None:
        context.log.info(f"canary {t.from_state} -> {t.to_state} weights={t.weights}: {t.reason}")

    def analyse() -> canary.CanaryResult:
        if isinstance(metrics, PrometheusMetrics) and not metrics.wait_until_scraped(candidate):
            context.log.warning(
                f"Prometheus has not scraped v{candidate} yet; the first window may read no data"
            )
        return canary.run_canary(
            target,
            metrics,
            "production",
            candidate,
            baseline,
            config.canary_config(),
            on_transition=log_transition,
        )

    if config.synthetic_traffic_rps > 0 and state.endpoint:
        records = integration.records(holdout_set.head(500))
        with TrafficGenerator(
            state.endpoint, records, rate=config.synthetic_traffic_rps
        ) as traffic:
            result = analyse()
        context.log.info(
            f"synthetic traffic: {traffic.sent} requests sent, {traffic.failed} transport errors"
        )
    else:
        result = analyse()

    if result.promoted:
        if baseline:
            mlflow_registry.set_alias("previous", baseline)
        mlflow_registry.set_alias("champion", candidate)
        mlflow_registry.set_version_tags(candidate, {"deployment": "production"})
        for version in target.state("production").weights():
            if version not in (candidate, baseline):
                target.retire("production", version)
    else:
        target.retire("production", candidate)
        mlflow_registry.set_version_tags(
            candidate, {"deployment": f"rolled_back: {result.reason}"[:250]}
        )
    transitions = pd.DataFrame([t.as_dict() for t in result.transitions])
    yield dg.AssetCheckResult(
        check_name="canary_analysis",
        passed=result.promoted,
        metadata={
            "outcome": str(result.status),
            "reason": result.reason,
            "rollback_seconds": result.rollback_seconds
            if result.rollback_seconds is not None
            else "n/a",
            "transitions": dg.MetadataValue.md(md_table(transitions, max_rows=100)),
        },
    )
    final = target.state("production")
    yield dg.Output(
        {
            "action": "promoted" if result.promoted else str(result.status),
            "candidate": candidate,
            "champion": mlflow_registry.alias_version("champion"),
            "previous": mlflow_registry.alias_version("previous"),
            "reason": result.reason,
        },
        metadata={
            "outcome": str(result.status),
            "reason": result.reason,
            "candidate_version": candidate,
            "champion_version": mlflow_registry.alias_version("champion") or "none",
            "previous_version": mlflow_registry.alias_version("previous") or "none",
            "production_endpoint": dg.MetadataValue.url(final.endpoint)
            if final.endpoint
            else "n/a",
            "weights": str(final.weights()),
            "rollback_seconds": result.rollback_seconds
            if result.rollback_seconds is not None
            else "n/a",
            "transitions": dg.MetadataValue.md(result.as_markdown()),
        },
    )


def _skip_checks(asset: str, checks: dict[str, str], reason: str):
    """Check results for a deliberate no-op (the gate kept the champion): passed, with the reason."""
    for name in checks:
        yield dg.AssetCheckResult(
            asset_key=asset, check_name=name, passed=True, metadata={"skipped": reason}
        )
