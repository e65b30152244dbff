"""``python -m churn_platform sensors tick NAME [--model M] [--commit]``: one tick of a sensor of
the definitions, evaluated against the local Dagster instance (``DAGSTER_HOME``) from the
cursor the daemon stored, with everything it decided printed: its figures (per window the
PSI of each feature, the rows and the threshold), its decision (the run it requests with
run key and tags, or why it skips) and the cursor before and after.

A dry run (the default) changes nothing: no cursor is stored, no observation recorded, no
notification sent, and the PSI export goes to a temporary folder; the serving watchdog only
says what it finds wrong (its tick would repair it). ``--commit`` stores the
new cursor and records the tick's observations as the daemon would; it launches no run
(the daemon does; the output says how to start one by hand) and sends no notification.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HELP = "evaluate a sensor against the local instance: figures, decision, cursor (dry run)"
_WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
WATCHDOG = "serving_watchdog_sensor"  # repairs on a tick: its dry run only looks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sensors`` subcommand group: ``tick``."""
    sub = parser.add_subparsers(dest="sensors_command", required=True)
    tick = sub.add_parser("tick", help="evaluate one tick of a sensor and print what it decided")
    tick.add_argument("name", help="the sensor, e.g. psi_drift_sensor (the model's name is added)")
    tick.add_argument("--model", help="which model of the platform file (default: the first)")
    tick.add_argument(
        "--commit",
        action="store_true",
        help="store the cursor and record the observations, as the daemon would",
    )


def sensor_name(names: list[str], model: Any, name: str) -> str:
    """``name`` as the definitions call it: as given, or with ``model``'s naming added."""
    for candidate in (name, model.named(name)):
        if candidate in names:
            return candidate
    raise ValueError(f"no sensor {name!r} in the definitions; sensors: {sorted(names)}")


def figures(events: list[Any]) -> list[str]:
    """Each observation of the tick (one per window judged) as lines: the window, its rows,
    the threshold, then every metadata figure (PSI per feature first)."""
    lines = []
    for event in events:
        meta = {key: getattr(value, "value", value) for key, value in event.metadata.items()}
        window = meta.pop("drift_window", event.asset_key.to_user_string())
        head = ", ".join(
            f"{key} {meta.pop(key)}"
            for key in ("rows", "threshold", "max_psi", "max_psi_feature", "champion_version")
            if key in meta
        )
        lines.append(f"  window {window}: {head}")
        for key in sorted(meta, key=lambda k: (not k.startswith("psi_"), k)):
            lines.append(f"    {key}: {meta[key]}")
    return lines


def decision(result: Any, instance: Any) -> list[str]:
    """The run requests (run key, tags, and whether a run with that key exists, which the
    daemon would skip) or the skip reason."""
    import dagster as dg

    requests = list(result.run_requests or [])
    if not requests:
        return [f"decision: skip: {result.skip_message or 'no reason given'}"]
    lines = [f"decision: {len(requests)} run(s) requested"]
    for request in requests:
        done = request.run_key and instance.get_runs_count(
            dg.RunsFilter(tags={"dagster/run_key": request.run_key})
        )
        lines.append(
            f"  run key {request.run_key}"
            + (" (a run with this key exists: the daemon would not start another)" if done else "")
        )
        lines.append(f"  tags {json.dumps(dict(request.tags), sort_keys=True)}")
    return lines


def _resources(defs: Any, commit: bool, scratch: str) -> dict[str, Any]:
    """The definitions' resources; a silent notifier always, and for a dry run a storage in
    ``scratch`` (the PSI export is a write the dry run must not make)."""
    from churn_platform.resources.notify import Notifier
    from churn_platform.resources.storage import StorageResource

    resources = dict(defs.resources or {})
    resources["notifier"] = Notifier()
    if not commit:
        real = resources.get("storage")
        resources["storage"] = StorageResource(base_url=scratch)
        if isinstance(real, StorageResource):
            _copy_performance_exports(real, resources["storage"])
    return resources


def _copy_performance_exports(real: Any, scratch: Any) -> None:
    """The figures ``model_performance`` wrote, copied into the dry run's storage: the
    performance sensor reads them there (the default model's and each platform-file model's)."""
    from churn_platform.core.performance_step import PERFORMANCE_EXPORT_KEY

    keys = [PERFORMANCE_EXPORT_KEY]
    models = real.path("models")
    if models.is_dir():
        keys += [f"models/{m.name}/{PERFORMANCE_EXPORT_KEY}" for m in models.iterdir()]
    for key in keys:
        source = real.path(key)
        if source.is_file():
            scratch.write_text(key, source.read_text())


def _store(instance: Any, name: str, result: Any) -> list[str]:
    """Store the tick's cursor and observations as the daemon would; what was done."""
    from churn_platform import dagster_private

    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    lines = [f"recorded {len(result.asset_events or [])} observation(s)"]
    if result.cursor is None:
        return [*lines, "the tick returned no cursor: nothing to store"]
    if not dagster_private.store_sensor_cursor(instance, name, result.cursor):
        # the daemon keys a sensor's state by its code location: the public command makes it
        command = ["dagster", "sensor", "cursor", name, "--set", result.cursor]
        try:
            done = subprocess.run(
                [sys.executable, "-m", *command, "-w", str(_WORKSPACE)],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,  # loading the code location; a hung one must not hang us
            )
        except subprocess.TimeoutExpired:
            return [*lines, f"could not store the cursor: {' '.join(command[:3])} took > 600 s"]
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            return [*lines, f"could not store the cursor ({' '.join(command[:3])}): {tail}"]
    return [*lines, "stored the cursor"]


def watchdog_dry_run(context: Any, model: Any) -> list[str]:
    """The serving watchdog's dry run: what it finds wrong in each deployment, repaired
    nothing (a tick repairs; ``--commit`` runs it, without the notification)."""
    from churn_platform.core.watchdog import watch
    from churn_platform.defs.common import model_resource
    from churn_platform.defs.serving_watchdog import WATCHED

    target = model_resource(context, model, "deployment").target()
    registry = model_resource(context, model, "mlflow_registry")
    reports = [watch(target, registry, env, repair=False) for env in WATCHED]
    lines = [f"  {r.text()}" for r in reports]
    if all(r.healthy for r in reports):
        return [*lines, "decision: nothing to repair"]
    return [*lines, "decision: a tick would repair this (dry run: nothing was touched; --commit)"]


def tick(name: str, model_name: str | None, commit: bool) -> int:
    """Evaluate one tick of sensor ``name`` and print it; 2 on a configuration error."""
    import dagster as dg

    from churn_platform import dagster_private, runs
    from churn_platform.cli import ensure_dagster_home
    from churn_platform.config import load_config
    from churn_platform.definitions import build_definitions

    runs.quiet_warnings()
    try:
        home = ensure_dagster_home()
        config = load_config()
        defs = build_definitions(config)
        names = [s.name for s in defs.sensors or []]
        name = sensor_name(names, config.model(model_name), name)
    except ValueError as exc:
        print(f"sensors tick: {exc}", file=sys.stderr)
        return 2
    mode = "COMMIT: cursor and observations stored" if commit else "dry run: nothing stored"
    print(f"sensor {name} on the Dagster instance at {home} ({mode})")
    with dg.DagsterInstance.get() as instance, tempfile.TemporaryDirectory() as scratch:
        known, cursor = dagster_private.stored_sensor_cursor(instance, name)
        print(f"cursor before: {cursor if known else 'none (the daemon never ticked it here)'}")
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            sensor_name=name,
            resources=_resources(defs, commit, scratch),
            definitions=defs,
        )
        if not commit and name == config.model(model_name).named(WATCHDOG):
            print("\n".join(watchdog_dry_run(context, config.model(model_name))))
            return 0
        try:
            result = defs.get_sensor_def(name).evaluate_tick(context)
        except Exception as exc:  # noqa: BLE001 - the daemon would record it as the tick's error
            cause = exc.__cause__ or exc
            print(f"the sensor raised: {type(cause).__name__}: {cause}", file=sys.stderr)
            return 1
        lines = ["figures:", *(figures(list(result.asset_events or [])) or ["  none"])]
        lines += decision(result, instance)
        lines.append(f"cursor after: {result.cursor}")
        if commit:
            lines += _store(instance, name, result)
        if result.run_requests:
            lines.append(
                "no run was started (the daemon starts a sensor's runs); by hand: python -m "
                "churn_platform run --job retraining"
                + (f" --model {model_name}" if model_name else "")
            )
    print("\n".join(lines))
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    """Dispatch ``sensors tick``."""
    return tick(args.name, args.model, args.commit)
