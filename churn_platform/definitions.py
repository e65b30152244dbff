"""The code location: the definitions of every model of the platform, merged.

``build_definitions(config)`` calls each ``defs`` factory once per model of the
configuration (``churn_platform.config``: the environment and, with ``CHURN_PLATFORM``, a
platform file listing several models) and merges them with the platform's resources and the
executor of its environment. ``dagster dev -w workspace.yaml`` loads ``defs``.
"""

from __future__ import annotations

import dagster as dg

from churn_platform import settings
from churn_platform.config import ModelConfig, PlatformConfig, load_config
from churn_platform.core.spec import SpecError
from churn_platform.defs import (
    after_release,
    automation,
    data,
    deployment,
    evaluation,
    freshness,
    model,
    notifications,
    serving_watchdog,
    weekly_scores,
)
from churn_platform.resources.environments import executor_for, platform_resources


class InvalidSettingsError(settings.SettingsError, dg.DagsterError):
    """A setting or the table spec is invalid; the message names it, the key and the fix.

    A ``SettingsError`` (the CLI reports it as a configuration error) and a ``DagsterError``,
    so that Dagster's loader passes it through as the code location's load error (any other
    exception is wrapped in "Error occurred during the loading of Dagster definitions", which
    the UI shows first): the UI and ``dagster definitions validate`` show this message first.
    """


def model_assets(model_config: ModelConfig) -> list[dg.AssetsDefinition]:
    """One model's assets, in graph order: snapshot to production."""
    return [
        *data.build(model_config),
        *model.build(model_config),
        *evaluation.build(model_config),
        *deployment.build(model_config),
    ]


def model_definitions(config: PlatformConfig, model_config: ModelConfig) -> dg.Definitions:
    """One model's assets, checks, jobs, schedule and sensors (no resources: they are merged
    once, for the whole platform)."""
    return dg.Definitions.merge(
        dg.Definitions(
            assets=freshness.with_policies(
                model_assets(model_config), model_config, config.freshness
            ),
            sensors=[
                notifications.build_rollback_notification(model_config),
                freshness.build_freshness_notification(model_config, config.freshness),
                serving_watchdog.build_serving_watchdog(model_config, config),
            ],
        ),
        automation.build(model_config, config),
        after_release.build(model_config, config),
        weekly_scores.build(model_config, config),
    )


def build_definitions(config: PlatformConfig | None = None) -> dg.Definitions:
    """The definitions of every model of ``config`` (default: ``load_config()``, the
    environment now) with the platform's resources and executor; a bad setting or spec stops
    here with a message naming it (a bad spec: its key, line and fix)."""
    config = config or load_config()
    return dg.Definitions.merge(
        *(model_definitions(config, m) for m in config.models),
        dg.Definitions(
            sensors=[
                notifications.run_failure_notification,
                notifications.notification_outbox,
            ],
            resources=platform_resources(config),
            executor=executor_for(config),
        ),
    )


try:
    defs = build_definitions()
except (settings.SettingsError, SpecError) as exc:
    # the message names the variable and the fix; the loader's stack adds nothing to it
    raise InvalidSettingsError(str(exc)) from None
