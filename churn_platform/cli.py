"""``python -m churn_platform run``: run a job on the local instance and end with a summary;
``python -m churn_platform settings``: every setting, its value and where it came from;
``python -m churn_platform demo``: six weeks of retraining, drift, failures and releases;
``python -m churn_platform spec infer|check``: write a starter table spec, or validate one;
``python -m churn_platform sensors tick NAME``: one sensor tick's figures, decision and cursor;
``python -m churn_platform score --from DATE --to DATE``: the weekly scores of a range of weeks.

The summary is what a person acts on: did it succeed, what did the gate decide, which
model version serves production and where, and where to look in the UI. A failure prints
the step's own message (which names the column, file or setting to fix), not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from churn_platform import settings
from churn_platform.config import ModelConfig, load_config
from churn_platform.core import canary
from churn_platform.core import records as r

JOB_BASES = ("end_to_end", "retraining", "release", "rollback")
JOBS = tuple(f"churn_{base}" for base in JOB_BASES)  # the default model's job names
_DAGSTER_YAML = Path(__file__).resolve().parent.parent / "deploy" / "local" / "dagster.yaml"


def ensure_dagster_home() -> Path:
    """``DAGSTER_HOME`` (default ``$CHURN_HOME/dagster``), created with the local dagster.yaml."""
    home = load_config().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and _DAGSTER_YAML.exists():
        shutil.copy(_DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def failure_messages(result: Any) -> list[str]:
    """Each failed step's own description (a ``dg.Failure``) or its error's last line."""
    messages = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        data = event.event_specific_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            text = data.user_failure_data.description
        else:
            error = data.error
            while error.cause is not None:
                error = error.cause
            text = error.message.strip().splitlines()[-1]
        messages.append(f"{event.step_key}: {text}")
    return messages


def summary(
    result: Any, registry: Any, target: Any, run_id: str, model: ModelConfig | None = None
) -> list[str]:
    """The closing lines of a run of ``model``'s job (default: the unprefixed churn model)."""
    names = ("evaluation_report", "staging_deployment", "production_deployment")
    report_key, staging_key, release_key = (
        ("/".join(model.key(a)) for a in names) if model else names
    )
    lines = [f"run {run_id}: {'SUCCESS' if result.success else 'FAILED'}"]
    done = sorted(
        {
            e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
        }
    )
    lines.append(f"materialised: {', '.join(done) or 'nothing'}")
    lines += [f"failed: {m}" for m in failure_messages(result)]
    if report_key in done:
        report = result.output_for_node(report_key.replace("/", "__"))
        verdict = "promote" if report.promote else "keep the champion"
        lines.append(
            f"gate decision: {verdict} (challenger v{report.challenger_version}): {report.reason}"
        )
    if staging_key in done:
        staged = result.output_for_node(staging_key.replace("/", "__"))
        lines += staging_lines(staged.candidate, target.state(r.STAGING).weights())
    if release_key in done:
        release = result.output_for_node(release_key.replace("/", "__"))
        lines.append(canary.release_line(dataclasses.asdict(release)))
    lines += _serving_lines(registry, target)
    lines.append(f"UI: dagster dev -w workspace.yaml, then http://127.0.0.1:3000/runs/{run_id}")
    lines.append(f"MLflow UI: mlflow ui --backend-store-uri {registry.uri()}")
    lines.append("stop the model servers: python -m churn_platform.serving stop")
    return lines


def staging_lines(staged: str | None, now: Mapping[str, int]) -> list[str]:
    """What the run staged, said against what staging holds now (``now``: version -> weight):
    a later run may have replaced the candidate since."""
    if not staged:
        return []
    if staged in now:
        return [f"staged: v{staged} (staging holds {', '.join('v' + v for v in now)})"]
    held = ", ".join("v" + v for v in now) or "nothing"
    return [
        f"staged: v{staged}, no longer in staging (staging now holds {held}: a later run "
        "replaced it; the production step releases this run's own version or says why not)"
    ]


def _serving_lines(registry: Any, target: Any) -> list[str]:
    """What production serves, read now from the running router and the registry (not from
    the run's records), with any disagreement and its fix; a registry that cannot be read
    is said, not a traceback."""
    from churn_platform.core.release import traffic_disagreement

    try:
        aliases = registry.aliases()
    except Exception as exc:  # noqa: BLE001 - the summary must print whatever failed
        return [f"registry unreadable ({type(exc).__name__}: {str(exc)[:200]})"]
    champion = aliases.get(r.CHAMPION)
    endpoint = target.state(r.PRODUCTION).endpoint
    live = target.live_weights(r.PRODUCTION) if hasattr(target, "live_weights") else None
    if live is None and endpoint:
        live = target.state(r.PRODUCTION).weights()
    lines = []
    if champion and endpoint:
        shares = [(v, w) for v, w in (live or {}).items() if w]
        serving = ", ".join(f"v{v}" + ("" if w == 100 else f" {w}%") for v, w in shares)
        serving = serving or "nothing (no version carries traffic)"
        lines.append(f"serving in production: {serving} at {endpoint}/predict")
    elif champion:
        lines.append(
            f"champion: v{champion}, but no production server is running; "
            "bring it back: python -m churn_platform.serving restore"
        )
    else:
        lines.append("serving in production: nothing yet")
    problem = traffic_disagreement(champion, live) if champion and endpoint else None
    if problem:
        lines.append(f"DISAGREEMENT: {problem}")
    if champion:
        lines.append(_champion_quality(registry, champion))
    lines.append(f"registry aliases: {aliases or 'none'} ({registry.uri()})")
    return lines


def _champion_quality(registry: Any, champion: str) -> str:
    """The champion's holdout AUC and interval from its registered run's metrics."""
    from churn_platform.core.model_step import quality_line

    try:
        return quality_line(champion, registry.version_metrics(champion))
    except Exception as exc:  # noqa: BLE001 - the summary must print whatever failed
        return f"champion v{champion}: metrics unreadable ({type(exc).__name__}: {str(exc)[:200]})"


def job_week_tags(
    job: Any, instance: Any, model: ModelConfig, week: str | None = None
) -> dict[str, str]:
    """The partition tag a run of ``job`` needs: none when the job holds no weekly asset;
    ``week`` when given (a ``ValueError`` names the partitions when it is not one), else
    ``week_runs.week_to_run``."""
    from churn_platform.defs import week_runs

    partitions = job.partitions_def
    if partitions is None:
        return {}
    if week is None:
        return week_runs.partition_tags(week_runs.week_to_run(instance, model))
    if not partitions.has_partition_key(week):
        keys = partitions.get_partition_keys()
        raise ValueError(
            f"--week {week} is not a week of {job.name}'s partitions ({keys[0]} .. {keys[-1]}, "
            "each a Sunday YYYY-MM-DD)"
        )
    return week_runs.partition_tags(week)


def job_base(job_name: str) -> str:
    """``end_to_end`` from ``end_to_end`` or the default model's ``churn_end_to_end``."""
    return job_name.removeprefix("churn_") if job_name in JOBS else job_name


def run(
    job_name: str,
    config_file: str | None,
    verbose: bool = False,
    run_config: dict[str, Any] | None = None,
    model_name: str | None = None,
    week: str | None = None,
) -> int:
    """Execute ``job_name`` (a base name like ``end_to_end``, or a default model's job name)
    of model ``model_name`` (default: the first) on the persistent local instance
    (``run_config``, else the YAML ``config_file``); print the summary; 0 on success. A job
    with the weekly data runs partition ``week`` (default: ``week_runs.week_to_run``)."""
    import dagster as dg

    from churn_platform import runs

    if not verbose:
        runs.quiet_warnings()
    try:
        ensure_dagster_home()
        from churn_platform.definitions import build_definitions

        config = load_config()
        model = config.model(model_name)
        defs = build_definitions(config)
        if run_config is None:
            run_config = yaml.safe_load(Path(config_file).read_text()) if config_file else {}
    except (ValueError, OSError, yaml.YAMLError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    job_name = model.job(job_base(job_name))
    if not verbose:  # the step logs are in the UI's run page; keep the terminal for the summary
        run_config.setdefault("loggers", {"console": {"config": {"log_level": "CRITICAL"}}})
    resources = defs.resources or {}
    print(f"running {job_name} on the local Dagster instance ({config.dagster_home})...")
    job = defs.resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        for repair in runs.repair_dead_runs(instance):
            print(f"repaired: {repair}", flush=True)
        try:
            tags = job_week_tags(job, instance, model, week)
        except ValueError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        if tags:
            print(f"week {next(iter(tags.values()))} (partition of the weekly data)")
        try:
            result = runs.execute(job, instance, run_config, tags=tags)
        except runs.Interrupted as stopped:
            print(f"interrupted: {stopped}", file=sys.stderr)
            runs.exit_now(130, instance)
        lines = summary(
            result,
            resources[model.resource_key("mlflow_registry")],
            resources[model.resource_key("deployment")].target(),
            result.run_id,
            model,
        )
    print("\n" + "\n".join(f"  {line}" if i else line for i, line in enumerate(lines)))
    return 0 if result.success else 1


def show_settings() -> int:
    """Print every setting: value (secrets masked), where it came from, what it means.
    Returns 1 when a value is invalid (each such row says why), else 0."""
    rows = settings.describe()
    width = max(len(r["name"]) for r in rows)
    invalid = 0
    for row in rows:
        value = row["value"] if row["value"] != "" else "(not set)"
        print(f"{row['name']:<{width}}  {value}  [{row['source']}]")
        print(f"{'':<{width}}    {row['description']}; accepts {row['accepted']}")
        if row["error"]:
            invalid += 1
            print(f"{'':<{width}}    INVALID: {row['error']}")
    if invalid:
        print(f"\n{invalid} setting(s) invalid; fix them before running a job", file=sys.stderr)
    return 1 if invalid else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m churn_platform", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run a job and print a summary")
    run_parser.add_argument(
        "--job",
        choices=(*JOB_BASES, *JOBS),
        default="end_to_end",
        help="which job of the model (the default model's jobs are also churn_<job>)",
    )
    run_parser.add_argument("--model", help="which model of the platform file (default: first)")
    run_parser.add_argument("--config", help="YAML run config (ops: {asset: {config: {...}}})")
    run_parser.add_argument("--verbose", action="store_true", help="print Dagster's step logs too")
    run_parser.add_argument(
        "--week",
        help="the week (its Sunday, YYYY-MM-DD) of the weekly data to snapshot and train on "
        "(default: this week; the synthetic world's next week)",
    )
    sub.add_parser(
        "settings", help="list every setting, its value and where it came from (secrets masked)"
    )
    from churn_platform import backfill, rollback, sensor_tick, spec_cli, trigger

    trigger.add_arguments(sub.add_parser("trigger", help=trigger.HELP))
    demo_parser = sub.add_parser(
        "demo", help="play six weeks through the real jobs on a fresh home; ends with a table"
    )
    demo_parser.add_argument("--weeks", type=int, default=6, help="play the first N weeks (1-6)")
    demo_parser.add_argument("--home", help="an empty or new folder (default: a new temp folder)")
    rollback.add_arguments(sub.add_parser("rollback", help=rollback.HELP))
    spec_cli.add_arguments(sub.add_parser("spec", help=spec_cli.HELP))
    sensor_tick.add_arguments(sub.add_parser("sensors", help=sensor_tick.HELP))
    backfill.add_arguments(sub.add_parser("score", help=backfill.HELP))
    backfill.add_arguments(sub.add_parser("data", help=backfill.DATA_HELP))
    args = parser.parse_args(argv)
    if args.command == "settings":
        return show_settings()
    if args.command == "trigger":
        return trigger.run_from_args(args)
    if args.command == "demo":
        from churn_platform import demo

        return demo.main(args.home, args.weeks)
    if args.command == "rollback":
        return rollback.run_from_args(args)
    if args.command == "spec":
        return spec_cli.run_from_args(args)
    if args.command == "sensors":
        return sensor_tick.run_from_args(args)
    if args.command == "score":
        return backfill.run_from_args(args)
    if args.command == "data":
        return backfill.run_from_args(args, backfill.DATA_JOB)
    return run(args.job, args.config, args.verbose, model_name=args.model, week=args.week)
