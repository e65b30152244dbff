"""Command line: run a model server or router, list or stop what runs locally.

    python -m churn_platform.serving model-server --model-uri models:/churn_model/3 --version 3 --port 8001
    python -m churn_platform.serving router --state-file router.json --port 8000
    python -m churn_platform.serving status [--environment production] [--state-dir DIR]
    python -m churn_platform.serving stop   [--environment production] [--state-dir DIR]
    python -m churn_platform.serving restore [--environment production] [--state-dir DIR]
    python -m churn_platform.serving exporter [--port 9108] [--environment production]
    python -m churn_platform.serving prometheus [--listen 127.0.0.1:9090] [--render-only]
                                                [--alertmanager [--alertmanager-listen ADDR]]

``model-server`` and ``router`` listen on ``--host/--port`` or on an inherited socket
(``--fd``, how ``LocalProcessTarget`` starts them). ``status``/``stop`` read the state
``LocalProcessTarget`` keeps (default ``$CHURN_HOME/deployments``); ``status`` adds the
weights each running router applies, the registry's aliases and the champion's holdout
AUC with its interval (from its registered run's metrics), and flags a disagreement.
``restore`` (after a reboot, or every server killed) restarts what the state files
record, routers at their recorded ports, so every endpoint URL stays the same; every
deployment runs it first. With ``CHURN_ENV=kubernetes`` it re-applies, in the serving
namespaces, the Deployments, Services and HTTPRoute that the route and the registry's
``champion``/``previous`` describe (``KubernetesTarget.restore``). ``prometheus``
renders ``deploy/local/prometheus.yml`` for those deployments (file-based discovery of
every model server, the alert rules of ``deploy/k8s/prometheus``) into
``$CHURN_HOME/prometheus/prometheus.yml`` and replaces itself with ``prometheus``; with
``--alertmanager`` it also renders ``deploy/k8s/alertmanager/alertmanager.yml`` (the
platform's webhook and Slack, ``CHURN_WEBHOOK_URL``/``CHURN_SLACK_TOKEN``) into
``$CHURN_HOME/prometheus/alertmanager.yml``, points Prometheus at it and runs both until
either exits or it is stopped (SIGTERM stops both).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from churn_platform.config import ModelConfig, PlatformConfig
    from churn_platform.core.rollout import DeploymentTarget
    from churn_platform.serving.server_settings import ServerSettings
    from churn_platform.targets.local import LocalProcessTarget

# before numpy / sklearn load: a 1-row predict must not fan out over every core
os.environ.setdefault("OMP_NUM_THREADS", "1")
# no *_created series: they double the scrape size and nobody queries them
os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")


def _serve(app: object, args: argparse.Namespace, served: ServerSettings) -> None:
    import uvicorn

    log_options: dict[str, object] = {}
    if args.log_file:
        from churn_platform.serving.process_log import log_to_file

        log_to_file(
            args.log_file, served.server_log_max_bytes, served.server_log_backups, args.log_level
        )
        log_options["log_config"] = None  # uvicorn's records go to the root logger's file
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        **log_options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        server.run(sockets=[sock])
    else:
        server.run()


def _listen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port (printed in the log)")
    p.add_argument("--fd", type=int, default=None, help="serve on this inherited socket")
    p.add_argument("--log-level", default="warning")
    p.add_argument(
        "--log-file",
        default=None,
        help="this process's log (also its stdout/stderr), rotated at CHURN_SERVER_LOG_MAX_BYTES",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m churn_platform.serving")
    sub = parser.add_subparsers(dest="command", required=True)

    ms = sub.add_parser("model-server", help="serve one model version")
    ms.add_argument("--model-uri", required=True, help="e.g. models:/churn_model/3")
    ms.add_argument("--version", required=True, help="version label for metrics and answers")
    ms.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    ms.add_argument("--inference-log", default=None, help="JSON-lines file of scored records")
    ms.add_argument(
        "--environment", default="", help="staging or production: picks its own inference log"
    )
    _listen_args(ms)

    rt = sub.add_parser("router", help="serve the weighted router")
    rt.add_argument("--state-file", required=True, help="backend table, saved on every change")
    _listen_args(rt)

    for name, text in (
        ("status", "list local deployments"),
        ("stop", "stop local deployments"),
        ("restore", "restart what the state files record (after a reboot or a kill)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--environment", default=None, help="staging or production (default: all)")
        p.add_argument("--state-dir", default="", help="default: the model's deployment folder")
        p.add_argument("--model", help="which model of the platform file (default: the first)")

    ex = sub.add_parser(
        "exporter", help="serve churn_traffic_weight and churn_feature_psi (a cluster's router)"
    )
    ex.add_argument("--environment", default="production", help="whose route weights to export")
    ex.add_argument("--model", help="which model of the platform file (default: the first)")
    _listen_args(ex)

    pm = sub.add_parser("prometheus", help="render the local Prometheus config and run it")
    pm.add_argument("--state-dir", default="", help="default: the model's deployment folder")
    pm.add_argument("--model", help="which model of the platform file (default: the first)")
    pm.add_argument("--listen", default="127.0.0.1:9090", help="Prometheus' listen address")
    pm.add_argument("--scrape-interval", default="5s")
    pm.add_argument("--config", default="", help="default: $CHURN_HOME/prometheus/prometheus.yml")
    pm.add_argument("--storage", default="", help="default: $CHURN_HOME/prometheus/data")
    pm.add_argument("--prometheus", default="prometheus", help="the prometheus binary")
    pm.add_argument(
        "--render-only", "--print", action="store_true", help="write and print the config only"
    )
    pm.add_argument(
        "--alertmanager", action="store_true", help="also run Alertmanager and send it the alerts"
    )
    pm.add_argument("--alertmanager-listen", default="127.0.0.1:9093")
    pm.add_argument("--alertmanager-binary", default="", help="default: alertmanager on PATH")
    pm.add_argument(
        "--alertmanager-group-wait", default="", help="wait before the first message of a group"
    )
    pm.add_argument("--slack-api-url", default="", help="default: Slack's chat.postMessage")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m churn_platform.serving``."""
    args = _parser().parse_args(argv)

    if args.command == "model-server":
        from churn_platform.serving.model_server.app import create_app

        served = dataclasses.replace(server_settings(), environment=args.environment)
        if args.tracking_uri:
            served = dataclasses.replace(served, tracking_uri=args.tracking_uri)
        app = create_app(
            args.model_uri,
            args.version,
            settings=served,
            inference_log_path=args.inference_log,
        )
        _serve(app, args, served)
        return 0
    if args.command == "router":
        from churn_platform.serving.router.app import create_router_app

        served = server_settings()
        _serve(create_router_app(args.state_file, settings=served), args, served)
        return 0

    from churn_platform.config import load_config

    config = load_config()
    model = config.model(args.model)
    if args.command == "exporter":
        _serve(_exporter_app(config, model, args.environment), args, server_settings())
        return 0
    if args.command == "restore" and config.environment == "kubernetes":
        return _restore_kubernetes(args.environment, config.mlflow_uri, model.registered_model)

    from churn_platform.targets.local import LocalProcessTarget

    target = LocalProcessTarget(args.state_dir or model.state_dir(config.home))
    if args.command == "prometheus":
        return _prometheus(target, args)
    if args.command == "status":
        return _status(target, args.environment, config.mlflow_uri, model.registered_model)
    if args.command == "restore":
        for env in [args.environment] if args.environment else target.environments():
            repairs = target.restore(env)
            for line in repairs or [f"{env}: everything recorded is running"]:
                print(line, flush=True)
        return 0
    stopped = target.stop_all(args.environment)
    where = args.environment or "all environments"
    print(f"stopped {len(stopped)} process(es) in {where}: {stopped}")
    return 0


def server_settings(environ: Mapping[str, str] | None = None) -> ServerSettings:
    """The serving processes' variables, read once (``environ``: default the process's)."""
    from churn_platform import object_store, settings
    from churn_platform.serving.server_settings import ServerSettings

    log = settings.get("CHURN_INFERENCE_LOG", environ)
    seed = settings.get("CHURN_FAULT_SEED", environ)
    try:
        storage, storage_error = settings.storage_url(environ), ""
    except settings.SettingsError as exc:  # raised where the storage is used, not here
        storage, storage_error = "", str(exc)
    return ServerSettings(
        home=settings.home_path(environ),
        inference_log=Path(log) if log else None,
        tracking_uri=settings.get("MLFLOW_TRACKING_URI", environ) or None,
        fault_rate=float(settings.get("CHURN_FAULT_RATE", environ)),
        fault_seed=None if seed is None else int(seed),
        fault_mode=str(settings.get("CHURN_FAULT_MODE", environ)),
        max_body_bytes=int(settings.get("CHURN_MAX_BODY_BYTES", environ)),
        body_read_timeout_seconds=float(settings.get("CHURN_BODY_READ_TIMEOUT_SECONDS", environ)),
        server_log_max_bytes=int(settings.get("CHURN_SERVER_LOG_MAX_BYTES", environ)),
        server_log_backups=int(settings.get("CHURN_SERVER_LOG_BACKUPS", environ)),
        inference_log_max_bytes=int(settings.get("CHURN_INFERENCE_LOG_MAX_BYTES", environ)),
        inference_log_backups=int(settings.get("CHURN_INFERENCE_LOG_BACKUPS", environ)),
        storage_url=storage,
        storage_options=object_store.options_from_env(environ),
        storage_error=storage_error,
        router_admin_token=str(settings.get("CHURN_ROUTER_ADMIN_TOKEN", environ)),
    )


def _status(
    target: LocalProcessTarget, environment: str | None, tracking_uri: str, model_name: str
) -> int:
    """Recorded processes, the weights each router applies now, the registry's aliases
    (when it answers), and a ``disagreement`` line where they differ."""
    from churn_platform.core.records import CHAMPION, PRODUCTION
    from churn_platform.core.release import traffic_disagreement

    status = target.status()
    if environment:
        status = {environment: status.get(environment)}
    aliases = _registry_aliases(tracking_uri, model_name)
    for env, entry in status.items():
        if entry is None:
            continue
        live = target.live_weights(env)
        entry["live_weights"] = live
        champion = aliases.get(CHAMPION) if aliases else None
        if env == PRODUCTION and champion is not None:
            problem = traffic_disagreement(champion, live)
            if problem:
                entry["disagreement"] = problem
    if aliases is not None:
        status["registry_aliases"] = aliases
    if aliases and aliases.get(CHAMPION):
        status["champion"] = _champion_quality(tracking_uri, model_name, aliases[CHAMPION])
    print(json.dumps(status, indent=2))
    return 0


def _champion_quality(tracking_uri: str, model_name: str, version: str) -> dict[str, Any]:
    """The champion's version with its holdout AUC and interval (the metrics its registered
    run logged), or why they are missing."""
    from churn_platform.core.model_step import holdout_quality

    try:
        from churn_platform.resources.mlflow_registry import MlflowRegistry

        registry = MlflowRegistry(tracking_uri=tracking_uri, model_name=model_name)
        quality = holdout_quality(registry.version_metrics(version))
    except Exception as exc:  # noqa: BLE001 - status must work with the registry down
        return {"version": version, "error": f"metrics unreadable: {type(exc).__name__}"}
    return {"version": version, **(quality or {"error": "no holdout AUC logged"})}


def _exporter_app(config: PlatformConfig, model: ModelConfig, environment: str) -> object:
    """The exporter of ``model``: the weights of ``environment``'s route (the HTTPRoute on
    Kubernetes, the router's table locally) and the drift sensor's PSI document."""
    from churn_platform import settings
    from churn_platform.defs.automation import psi_export_key
    from churn_platform.serving.exporter import exporter_app
    from churn_platform.serving.monitoring import read_psi_text
    from churn_platform.serving.performance_gauges import performance_location, read_text
    from churn_platform.targets.local import LocalProcessTarget

    target: DeploymentTarget
    if config.environment == "kubernetes":
        from churn_platform.targets.kubernetes import KubernetesTarget

        target = KubernetesTarget(settings.kubernetes_settings_from_env())
    else:
        target = LocalProcessTarget(model.state_dir(config.home))
    location = server_settings().storage_root() / psi_export_key(model)
    performance = performance_location(location)
    return exporter_app(
        lambda: target.state(environment).weights(),
        lambda: read_psi_text(location),
        lambda: read_text(performance),
    )


def _restore_kubernetes(environment: str | None, tracking_uri: str, model_name: str) -> int:
    """``restore`` on Kubernetes: each environment's objects and route as the route and the
    registry describe them; 1 when something could not be restored."""
    from churn_platform import settings
    from churn_platform.core.records import CHAMPION, PREVIOUS, PRODUCTION, STAGING
    from churn_platform.targets.kubernetes import KubernetesTarget

    aliases = _registry_aliases(tracking_uri, model_name)
    if aliases is None:
        print(
            "the registry is unreadable: restoring only what the HTTPRoutes reference",
            file=sys.stderr,
        )
        aliases = {}
    target = KubernetesTarget(settings.kubernetes_settings_from_env())
    failed = False
    for env in [environment] if environment else [STAGING, PRODUCTION]:
        keep = [aliases[PREVIOUS]] if env == PRODUCTION and PREVIOUS in aliases else []
        repairs = target.restore(env, champion=aliases.get(CHAMPION), keep=keep)
        failed = failed or any("could not be" in line for line in repairs)
        for line in repairs or [f"{env}: everything the route and the registry name is there"]:
            print(line, flush=True)
    return 1 if failed else 0


def _registry_aliases(tracking_uri: str, model_name: str) -> dict[str, str] | None:
    """The registry's aliases, or None when it cannot be read (status still answers)."""
    try:
        from churn_platform.resources.mlflow_registry import MlflowRegistry

        return dict(MlflowRegistry(tracking_uri=tracking_uri, model_name=model_name).aliases())
    except Exception:  # noqa: BLE001 - status must work with the registry down
        return None


def _prometheus(target: LocalProcessTarget, args: argparse.Namespace) -> int:
    """Render the config, then exec prometheus (its PID is ours: stop it by that PID), or with
    ``--alertmanager`` run both under this process."""
    import shutil

    from churn_platform.settings import churn_home

    folder = churn_home() / "prometheus"
    config = Path(args.config) if args.config else folder / "prometheus.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    target.write_prometheus_config(config, args.scrape_interval)
    manager = _alertmanager_argv(folder, config, args) if args.alertmanager else None
    if args.render_only:
        print(config.read_text(), end="")
        print(f"# written to {config}", file=sys.stderr)
        return 0
    binary = shutil.which(args.prometheus)
    if binary is None or manager == []:
        missing = "alertmanager" if binary else repr(args.prometheus)
        print(
            f"{missing} binary not found: apt-get install prometheus prometheus-alertmanager "
            "(or pass --prometheus / --alertmanager-binary PATH)",
            file=sys.stderr,
        )
        return 2
    storage = Path(args.storage) if args.storage else folder / "data"
    storage.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={args.listen}",
        "--web.enable-lifecycle",
    ]
    print(f"prometheus on http://{args.listen} with {config}", file=sys.stderr, flush=True)
    if manager:
        from churn_platform.serving.alertmanager import supervise

        print(f"alertmanager on http://{args.alertmanager_listen}", file=sys.stderr, flush=True)
        return supervise(argv, manager)
    os.execv(binary, argv)
    return 0  # not reached


def _alertmanager_argv(
    folder: Path, prometheus_config: Path, args: argparse.Namespace
) -> list[str]:
    """Render Alertmanager's config (the platform's channels), add the alerting section to
    Prometheus' config; the command line to run it ([] when no binary is found)."""
    from churn_platform import settings
    from churn_platform.serving import alertmanager as am

    token = str(settings.get("CHURN_SLACK_TOKEN") or "")
    token_file = folder / "slack-token"
    if token:
        token_file.write_text(token)
        token_file.chmod(0o600)
    channels = am.Channels(
        webhook_url=str(settings.get("CHURN_WEBHOOK_URL") or ""),
        slack_token_file=str(token_file) if token else "",
        slack_channel=str(settings.get("CHURN_SLACK_CHANNEL")),
        slack_api_url=args.slack_api_url or am.SLACK_API_URL,
    )
    config = folder / "alertmanager.yml"
    config.write_text(am.render_alertmanager_config(channels, args.alertmanager_group_wait))
    with prometheus_config.open("a") as out:
        out.write("\n" + am.alerting_section(args.alertmanager_listen))
    binary = am.find_binary(args.alertmanager_binary)
    if binary is None:
        return []
    storage = folder / "alertmanager-data"
    storage.mkdir(parents=True, exist_ok=True)
    return am.alertmanager_argv(binary, config, storage, args.alertmanager_listen)


if __name__ == "__main__":
    sys.exit(main())
