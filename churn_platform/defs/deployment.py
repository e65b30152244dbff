"""Staging with integration checks, then production through a canary with automatic rollback."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform import runs
from churn_platform.core import canary, release, training
from churn_platform.core import records as r
from churn_platform.core.rollout import EnvironmentState
from churn_platform.defs.common import GROUP, OWNERS, check_result, config_from
from churn_platform.resources.bases import DeploymentResource
from churn_platform.resources.metrics import MetricsResource, PrometheusMetrics
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.release_probes import ReleaseProbes

STAGING = "staging_deployment"
PRODUCTION = "production_deployment"
DEPLOYMENT_POOL = "churn_deployment"  # one deployment at a time (limit set in dagster.yaml)
TRAFFIC_ROWS = 500  # holdout rows replayed as synthetic canary traffic (they cycle)
STAGING_CHECKS = {
    r.HEALTH: "GET /health answers 200 once the model is loaded.",
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


RELEASE_MODE, ROLLBACK_MODE = "release", "rollback"
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
    release_probes: ReleaseProbes,
    evaluation_report: r.EvaluationDecision,
    holdout_set: pd.DataFrame,
):
    """The challenger served in staging beside the champion, at 0% of staging traffic.

    Integration checks (layer 4) run against the challenger's own server: health, the API
    contract, a latency bound, and online predictions equal to offline ones for the same
    holdout rows. When the gate said "keep", nothing is deployed and the asset says why.
    A failed check retires the challenger from staging and stops the run. Staging is first
    reconciled with its state file and the registry (`repaired` in the metadata).
    """
    with _exclusive(context):
        if not evaluation_report.promote:
            for name in STAGING_CHECKS:  # a deliberate no-op: passed, with the reason
                yield dg.AssetCheckResult(
                    asset_key=STAGING,
                    check_name=name,
                    passed=True,
                    metadata={"skipped": "nothing deployed: the gate kept the champion"},
                )
            repairs = release.reconcile(deployment.target(), mlflow_registry, r.STAGING)
            yield dg.Output(
                release.nothing_staged(evaluation_report),
                metadata={
                    "action": r.NO_ACTION,
                    "reason": f"champion kept: {evaluation_report.reason}",
                    "repaired": _lines(tuple(repairs)),
                },
            )
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
            ),
        )
        for outcome in staged.outcomes:
            yield check_result(outcome, STAGING)
        if staged.failed:
            raise dg.Failure(
                description=f"staging checks failed for version {staged.served.version}: "
                f"{', '.join(staged.failed)}; the challenger was removed from staging and "
                "production is untouched",
                metadata={
                    "candidate": staged.served.version,
                    "failed_checks": ", ".join(staged.failed),
                },
            )
        yield dg.Output(
            staged.record,
            metadata={
                "action": "deployed to staging",
                "candidate_version": staged.served.version,
                "candidate_model_uri": staged.served.model_uri,
                "baseline_version": staged.champion or "none",
                "candidate_url": dg.MetadataValue.url(staged.served.url),
                "staging_endpoint": _url(staged.state),
                "weights": str(staged.state.weights()),
                "repaired": _lines(staged.repairs),
            },
        )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"prometheus"},
    pool=DEPLOYMENT_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            r.CANARY_ANALYSIS,
            asset=PRODUCTION,
            description="The canary passed every analysis step; a rollback fails this check.",
        ),
        dg.AssetCheckSpec(
            r.REGISTRY_ALIASES,
            asset=PRODUCTION,
            blocking=True,
            description="The registry's aliases follow the traffic (retried; a failure names "
            "the repair command).",
        ),
    ],
)
def production_deployment(
    context: dg.AssetExecutionContext,
    config: ProductionConfig,
    mlflow_registry: MlflowRegistry,
    deployment: DeploymentResource,
    metrics_source: MetricsResource,
    release_probes: ReleaseProbes,
    staging_deployment: r.StagingResult,
    holdout_set: pd.DataFrame,
):
    """Production: the staged challenger through a canary, 5% -> 25% -> 100%.

    At each step an analysis window reads the canary's error rate (Prometheus when
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
    """
    with _exclusive(context):
        target = deployment.target()
        if config.mode not in (RELEASE_MODE, ROLLBACK_MODE):
            raise dg.Failure(
                description=f"production_deployment config mode must be {RELEASE_MODE!r} or "
                f"{ROLLBACK_MODE!r}, got {config.mode!r}"
            )
        if config.mode == ROLLBACK_MODE:
            try:
                done = release.rollback(
                    target, mlflow_registry, config.to_version or None, reason=config.reason
                )
            except ValueError as exc:
                raise dg.Failure(description=str(exc)) from exc
            for line in done.repairs:
                context.log.warning(f"repaired: {line}")
            yield dg.AssetCheckResult(
                check_name=r.CANARY_ANALYSIS,
                passed=True,
                metadata={"outcome": "rollback on demand: no canary", "reason": done.record.reason},
            )
            yield _alias_check(done)
            yield dg.Output(done.record, metadata=_release_metadata(target, mlflow_registry, done))
            return
        staged, notes = release.select_candidate(
            _staged_by_this_run(context, mlflow_registry),
            staging_deployment,
            mlflow_registry.alias_version(r.CHALLENGER),
        )
        for note in notes:
            context.log.warning(note)
        metrics = metrics_source.source(
            lambda: {v.version: v.url for v in target.state(r.PRODUCTION).versions},
            router_url=lambda: (
                target.state(r.PRODUCTION).endpoint
            ),  # its 502s are the version's errors
        )

        done = release.release(
            target,
            mlflow_registry,
            metrics,
            staged,
            config.to_core(canary.CanaryConfig),
            during_canary=lambda state: _canary_load(
                context,
                release_probes,
                metrics,
                staged.candidate or "",
                holdout_set.head(TRAFFIC_ROWS),
                config.synthetic_traffic_rps if state.endpoint else 0.0,
                state.endpoint or "",
                staged.model_uri or "",
                mlflow_registry.uri(),
            ),
            on_transition=lambda t: context.log.info(
                f"canary {t.from_state} -> {t.to_state} weights={t.weights}: {t.reason}"
            ),
            log=context.log.warning,
        )
        done = replace(done, notes=notes)
        if done.canary is not None:
            context.log.info(done.canary.summary())
        yield _canary_check(done)
        yield _alias_check(done)
        yield dg.Output(done.record, metadata=_release_metadata(target, mlflow_registry, done))


def _exclusive(context: dg.AssetExecutionContext) -> AbstractContextManager[None]:
    """The deployment pool held alone across processes (Dagster's own claim is not atomic
    on a SQLite instance; see ``runs.exclusive_step``)."""
    return runs.exclusive_step(
        context.instance,
        DEPLOYMENT_POOL,
        {
            "run": context.run.run_id,
            "job": context.job_name,
            "asset": context.asset_key.to_user_string(),
        },
        context.log.info,
    )


def _staged_by_this_run(
    context: dg.AssetExecutionContext, registry: MlflowRegistry
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
        if materialization is None or materialization.asset_key != dg.AssetKey(STAGING):
            continue
        meta = materialization.metadata
        if "candidate_version" not in meta:
            reason = meta.get("reason")
            return r.StagingResult(r.NO_ACTION, reason=str(reason.value) if reason else "")
        version = str(meta["candidate_version"].value)
        uri = meta.get("candidate_model_uri")
        baseline = meta.get("baseline_version")
        return r.StagingResult(
            r.DEPLOY,
            candidate=version,
            model_uri=str(uri.value) if uri else registry.model_uri(version),
            baseline=str(baseline.value) if baseline and baseline.value != "none" else None,
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
    out = done.record
    metadata: dict[str, Any] = {"action": out.action, "reason": out.reason}
    if done.canary is not None:
        metadata |= {
            "outcome": str(done.canary.status),
            "rollback_seconds": _or_na(done.canary.rollback_seconds),
            "transitions": dg.MetadataValue.md(done.canary.as_markdown()),
        }
    live = target.live_weights(r.PRODUCTION) if hasattr(target, "live_weights") else None
    if live is None:
        live = done.state.weights() if done.state.endpoint else None
    champion = registry.alias_version(r.CHAMPION)
    metadata |= {
        "candidate_version": out.candidate or "none",
        "champion_version": champion or "none",
        "previous_version": registry.alias_version(r.PREVIOUS) or "none",
        "production_endpoint": _url(done.state),
        "weights": str(live) if live is not None else "no router answers",
        "repaired": _lines(done.repairs),
        "notes": _lines(done.notes),
    }
    if champion:
        problem = release.traffic_disagreement(champion, live)
        if problem:
            metadata["disagreement"] = problem
    return metadata


def _lines(lines: tuple[str, ...]) -> str:
    return "; ".join(lines) or "nothing"


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
    if done.canary is None:
        return dg.AssetCheckResult(
            check_name=r.CANARY_ANALYSIS,
            passed=True,
            metadata={"outcome": "nothing to release", "reason": done.record.reason},
        )
    return dg.AssetCheckResult(
        check_name=r.CANARY_ANALYSIS,
        passed=done.canary.promoted,
        metadata={
            "outcome": str(done.canary.status),
            "reason": done.canary.reason,
            "rollback_seconds": _or_na(done.canary.rollback_seconds),
            "transitions": dg.MetadataValue.md(done.canary.as_markdown()),
        },
    )


def _url(state: EnvironmentState) -> Any:
    """An environment's endpoint as a link ('n/a' when it has none)."""
    return dg.MetadataValue.url(state.endpoint) if state.endpoint else "n/a"


def _or_na(value: float | None) -> Any:
    return value if value is not None else "n/a"
