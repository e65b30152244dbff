"""One model's serving watchdog: a sensor that keeps its deployments alive between releases.

Every ``CHURN_WATCHDOG_INTERVAL_SECONDS`` (default 3; Dagster's sensor daemon passes every
5 s, so in practice every 5 s) it runs ``core.watchdog.watch`` on
production, then staging, through the model's deployment-target resource: dead servers and
router restarted on their recorded ports (same URL), a traffic split that no release holds
put back on the champion, and what it could not fix reported with the command. One
``serving_unhealthy`` message per episode (the cursor keeps it), through ``deliver`` (a
refused one waits for ``notification_outbox``). While a deployment step holds the model's
deployment pool (a release, a rollback, staging) it only waits: a canary's split is the
release's.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg

from churn_platform import runs
from churn_platform.config import ModelConfig, PlatformConfig
from churn_platform.core import records as r
from churn_platform.core.watchdog import WatchEpisode, summary, watch
from churn_platform.defs.common import model_resource, model_resource_keys
from churn_platform.defs.deployment import deployment_pool
from churn_platform.defs.notifications import guarded
from churn_platform.resources.bases import DeploymentResource
from churn_platform.resources.mlflow_registry import MlflowRegistry
from churn_platform.resources.notify import SERVING_UNHEALTHY, Message, Notifier, deliver

WATCHED = (r.PRODUCTION, r.STAGING)  # production first: it is the one clients call


def build_serving_watchdog(model: ModelConfig, config: PlatformConfig) -> dg.SensorDefinition:
    """``model``'s ``serving_watchdog_sensor``, ticking every ``config.watchdog_interval_seconds``."""
    name = model.named("serving_watchdog_sensor")

    @dg.sensor(
        name=name,
        minimum_interval_seconds=config.watchdog_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Watches production and staging between releases every "
        f"{config.watchdog_interval_seconds} s (CHURN_WATCHDOG_INTERVAL_SECONDS): restarts dead "
        "model servers and the router on their recorded ports (the endpoint URL stays), puts a "
        "traffic split no release holds back to 100% on the champion, and reports what it "
        "could not fix with the command. One serving_unhealthy message per episode. Waits "
        "while a deployment step holds the model's deployment pool.",
        required_resource_keys={
            "notifier",
            "storage",
            *model_resource_keys(model, "mlflow_registry", "deployment"),
        },
    )
    def serving_watchdog_sensor(context: dg.SensorEvaluationContext):
        """Compare each deployment's records and the champion with what answers; repair what
        can be, notify once per episode, report the rest."""
        return guarded(context, name, lambda: _watch_tick(context, model, name))

    return serving_watchdog_sensor


def _watch_tick(context: dg.SensorEvaluationContext, model: ModelConfig, name: str) -> Any:
    registry: MlflowRegistry = model_resource(context, model, "mlflow_registry")
    deployment: DeploymentResource = model_resource(context, model, "deployment")
    episode = WatchEpisode.parse(context.cursor)
    holder = {"sensor": name, "job": "serving watchdog"}
    with runs.unless_held(context.instance, deployment_pool(model), holder) as held_by:
        if held_by is not None:
            return dg.SkipReason(
                f"a deployment step holds {deployment_pool(model)} ({held_by}): not watching "
                "during it"
            )
        target = deployment.target()
        reports = [watch(target, registry, environment) for environment in WATCHED]
    text = summary(reports)
    episode, notify = episode.advance(reports, time.time())
    if notify:
        notifier: Notifier = context.resources.notifier
        link = f"{notifier.ui_url.rstrip('/')}/automation"
        champion = registry.alias_version(r.CHAMPION) or "n/a"
        message = Message(SERVING_UNHEALTHY, champion, text, link)
        told = deliver(
            notifier, context.resources.storage, message, f"watchdog-{name}-{episode.started_at}"
        )
        context.log.warning(f"{text} (notification: {told})")
    elif not episode.open:
        text = "every deployment healthy"
    return dg.SensorResult(skip_reason=dg.SkipReason(text), cursor=episode.dumps())
