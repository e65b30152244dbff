"""``python -m churn_platform score --from DATE [--to DATE] [--model NAME]``: the weekly
scores of a range of weeks, one ``churn_scores`` partition (one run) per week, in order.
``python -m churn_platform data --from DATE [--to DATE]``: the same for the weekly data
(``churn_snapshot`` and ``validated_churn_data``, the contract's checks included).

Each date names the week holding it (weeks run Sunday to Saturday, UTC, as the partitions
do). Every run is tagged ``dagster/partition=<week>`` (the UI shows the week's partition
materialised or failed) and ``churn/backfill=<id>`` (the runs of one command). Each week is
scored by the model ``champion`` points at when its run starts, so re-scoring past weeks
with a newer champion is the same command. A failed week does not stop the others; the
command ends with a line per week and exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core.scores import week_start_of

HELP = "score a range of weeks with the champion: one churn_scores partition per week"
DATA_HELP = (
    "snapshot and validate a range of weeks: one churn_snapshot + validated_churn_data "
    "partition per week"
)
PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "churn/backfill"
JOB = "weekly_scores"
DATA_JOB = "weekly_data"
# what each job's partitions are called in an error, and the setting that starts them
SPANS = {
    JOB: ("churn_scores", "CHURN_SCORES_START"),
    DATA_JOB: ("the weekly data", "CHURN_WEEKS_START"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``score`` subcommand's options."""
    parser.add_argument(
        "--from", dest="first", required=True, help="a day (YYYY-MM-DD) of the first week"
    )
    parser.add_argument(
        "--to", dest="last", default="", help="a day of the last week (default: --from)"
    )
    parser.add_argument("--model", help="which model of the platform file (default: first)")
    parser.add_argument("--verbose", action="store_true", help="print Dagster's step logs too")


def weeks_between(
    partitions: dg.PartitionsDefinition, first: str, last: str = "", job: str = JOB
) -> list[str]:
    """The partition keys (Sundays) of the weeks holding ``first`` through ``last``; a
    ``ValueError`` names a bad date or a week that is no partition (before the start, or
    after the current week)."""
    start, end = week_start_of(first), week_start_of(last or first)
    if end < start:
        raise ValueError(f"--to {last} is before --from {first}; give the earlier day first")
    wanted = [d.date().isoformat() for d in pd.date_range(start, end, freq="7D")]
    keys = set(partitions.get_partition_keys())
    outside = [w for w in wanted if w not in keys]
    if outside:
        known = sorted(keys)
        span = f"{known[0]} to {known[-1]}" if known else "none yet"
        what, setting = SPANS[job]
        raise ValueError(
            f"week(s) {outside} are not partitions of {what} (weeks from {setting}: {span}); "
            f"pick weeks in that span or set {setting} earlier"
        )
    return wanted


@dataclass(frozen=True)
class WeekRun:
    """One week's run: its id, whether it succeeded and what to say about it."""

    week: str
    run_id: str
    success: bool
    line: str


def backfill(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    weeks: Sequence[str],
    run_config: Mapping[str, object] | None = None,
    out: Callable[[str], None] = lambda line: print(line, flush=True),
) -> list[WeekRun]:
    """Run ``job`` once per week of ``weeks`` on ``instance`` (in this process, in order)."""
    from churn_platform import cli, runs

    tag = uuid.uuid4().hex[:12]
    done = []
    for week in weeks:
        out(f"week {week}: {job.name} (backfill {tag})...")
        result = runs.execute(
            job,
            instance,
            dict(run_config or {}),
            out,
            tags={PARTITION_TAG: week, BACKFILL_TAG: tag},
            progress=False,
        )
        line = _week_line(result) if result.success else "; ".join(cli.failure_messages(result))
        done.append(WeekRun(week, result.run_id, result.success, line))
    return done


def _week_line(result: Any) -> str:
    """Rows, champion version and table of a successful week's scores; rows and data version
    of its validated data."""
    materializations = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    meta = {k: v.value for k, v in materializations[-1].metadata.items()}
    if "model_version" not in meta:
        return f"{meta['rows']} customers validated (data {str(meta['data_version'])[:12]})"
    return (
        f"{meta['rows']} customers scored by v{meta['model_version']} "
        f"(data {str(meta['data_version'])[:12]}), table: {meta['database_table']}"
    )


def run_from_args(args: argparse.Namespace, job_base: str = JOB) -> int:
    """Run ``job_base`` (the scores, or the weekly data) for the weeks the arguments name; 0
    when every week succeeded."""
    from churn_platform import cli, runs
    from churn_platform.config import load_config

    if not args.verbose:
        runs.quiet_warnings()
    try:
        cli.ensure_dagster_home()
        from churn_platform.definitions import build_definitions

        config = load_config()
        model = config.model(args.model)
        job = build_definitions(config).resolve_job_def(model.job(job_base))
        assert job.partitions_def is not None
        weeks = weeks_between(job.partitions_def, args.first, args.last, job_base)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with dg.DagsterInstance.get() as instance:
        done = backfill(job, instance, weeks, None if args.verbose else quiet)
    verb = "scored" if job_base == JOB else "snapshotted and validated"
    print(f"\n{sum(w.success for w in done)}/{len(done)} week(s) {verb}:")
    for week in done:
        state = "ok" if week.success else "FAILED"
        print(f"  {week.week} {state} (run {week.run_id[:8]}): {week.line}")
    return 0 if all(w.success for w in done) else 1
