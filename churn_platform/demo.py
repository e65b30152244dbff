"""``python -m churn_platform demo``: six weeks of the platform's life, through the real jobs.

On a fresh ``CHURN_HOME`` (and its Dagster instance) the demo plays one synthetic week at a
time; each week's snapshot draws that week's customers (see ``core.synthetic``):

1. launch: the whole graph by hand; a small first model becomes the champion.
2. drift: customers spend 60 more from now on; the real ``psi_drift_sensor`` is ticked with
   the real instance, and the run it requests retrains; the better model waits in staging.
3. a faulty model: the weekly schedule retrains, but the new model servers answer every
   request with a 500 (``CHURN_FAULT_RATE=1``): staging's checks stop it.
4. a canary that rolls back: retrained and staged cleanly, then approved (``churn_release``)
   while its production servers fail 60% of requests: the canary puts 100% back on the champion.
5. a promotion: retrained, staged, approved; the canary goes 5 -> 25 -> 100%.
6. concept drift: the churn mechanism turns (``CHURN_SYNTHETIC_CONCEPT_DRIFT=1``) while the
   inputs stay put. Production scores this week's customers, with their ids; the drift
   sensor stays quiet (its PSI figures printed); ``model_performance`` judges the week as of
   the day its outcomes are final (the label delay is fast-forwarded), the realized AUC falls
   and ``performance_sensor`` requests one retraining run for the episode (a second tick
   requests none); the retrained model wins the gate and is released.

Every run is a real run of the instance (open the UI on it afterwards); the closing table
says what happened each week, the champion's realized AUC and CBPE estimate where a week
was judged, and where to look. The model servers are stopped at the end.
Small data (6,000 rows a week) and a short canary keep it to a few minutes on two cores.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from churn_platform import runs
from churn_platform.core import records as r
from churn_platform.core.synthetic import week_start
from churn_platform.demo_after_release import week_concept_drift

DEMO_ROWS = 6_000
DRIFT_SPEND_SHIFT = 60.0
FAST_CHECKS = {"n_resamples": 300}
# the launch model is deliberately small (5 boosting rounds) so that later weeks can beat it
LAUNCH_MODEL = {
    **FAST_CHECKS,
    "max_iter": 5,
    "min_auc": 0.5,
    "min_slice_auc": 0.5,
    "min_invariance_fraction": 0.0,
}
STAGING = {"latency_requests": 20, "parity_rows": 100}
# a short canary: holdout rows replayed at 60 requests/s; the sequential test ends a step as
# soon as it decides (a healthy 5% step needs a few dozen canary requests), 120 s at most
CANARY = {
    "steps": [5, 25, 100],
    "analysis_window_seconds": 120.0,
    "interval_seconds": 0.5,
    "synthetic_traffic_rps": 60.0,
    # the shadow's score checks keep their defaults: the launch model is a toy and the
    # concept-drift week's champion ranks by a mechanism that no longer holds, and both
    # pass because the bounds follow what the pair shows on the holdout first
}
# the demo decides these; anything else set in the caller's shell is left out of its runs
CLEARED = (
    "CHURN_SOURCE",
    "CHURN_SOURCE_PATH",
    "CHURN_SOURCE_URL",
    "CHURN_SOURCE_TABLE",
    "CHURN_SOURCE_QUERY",
    "CHURN_MAPPING_FILE",
    "CHURN_SYNTHETIC_SEED",
    "CHURN_SYNTHETIC_AS_OF",
    "CHURN_SYNTHETIC_SPEND_SHIFT",
    "CHURN_SYNTHETIC_CONCEPT_DRIFT",
    "CHURN_AUTO_RELEASE",
    "CHURN_FAULT_RATE",
    "CHURN_FAULT_MODE",
    "CHURN_INFERENCE_LOG",
    "CHURN_PSI_THRESHOLD",
    "CHURN_DRIFT_MIN_ROWS",
    "CHURN_PERFORMANCE_START",
    "CHURN_PERFORMANCE_AUC_TOLERANCE",
    "CHURN_PERFORMANCE_TRIGGER",
    "CHURN_STAGING_PORT",
    "CHURN_PRODUCTION_PORT",
    "CHURN_ENV",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "PROMETHEUS_URL",
)


@dataclass(frozen=True)
class WeekRow:
    """One line of the closing table. ``result`` is a short code tests can rely on:
    ``released``, ``staged``, ``stopped_in_staging``, ``rolled_back``, ``promoted``,
    ``kept``, ``failed``."""

    week: int
    as_of: str
    trigger: str
    decision: str
    result: str
    outcome: str
    serving: str
    look: str
    run_ids: tuple[str, ...]
    realized: str = "-"
    estimate: str = "-"


def _events(result: Any, asset: str) -> dict[str, Any]:
    """The metadata (raw values) of ``asset``'s materialization in ``result`` ({} if none)."""
    for event in result.all_events:
        if event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def _failures(result: Any) -> list[str]:
    from churn_platform.cli import failure_messages

    return failure_messages(result)


def _decision(result: Any) -> str:
    meta = _events(result, "evaluation_report")
    if not meta:
        return "-"
    verdict = f"{meta['decision']} v{meta['challenger_version']}"
    if "auc_delta" not in meta:
        return f"{verdict} (no champion yet)"
    return (
        f"{verdict} (AUC delta {meta['auc_delta']:+.4f}, "
        f"CI low {meta['auc_delta_ci_lower']:+.4f}, vs v{meta['champion_version']})"
    )


@contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the body; restore them after."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Demo:
    """The weeks' shared state: the instance, the sensor cursor, the rows of the table."""

    def __init__(self, instance: dg.DagsterInstance, out: Callable[[str], None]) -> None:
        self.instance = instance
        self.out = out
        self.cursor: str | None = None
        self.performance_cursor: str | None = None
        self.rows: list[WeekRow] = []

    # -- plumbing ---------------------------------------------------------------------------

    def definitions(self) -> dg.Definitions:
        """The definitions as they load now (settings are read at load)."""
        from churn_platform.definitions import build_definitions

        return build_definitions()

    def run(self, job_name: str, ops: Mapping[str, Any], tags: Mapping[str, str]) -> Any:
        """Execute ``job_name`` on the instance with the config of its own assets."""
        job = self.definitions().resolve_job_def(job_name)
        names = {node.name for node in job.graph.nodes}
        config = {
            "ops": {name: {"config": cfg} for name, cfg in ops.items() if name in names},
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        }
        trigger = tags.get("dagster/run_key") or tags.get("dagster/schedule_name") or "by hand"
        self.out(f"  running {job_name} ({trigger}) ...")
        if "dagster/partition" not in tags:  # the week a sensor or the schedule would take
            from churn_platform.cli import job_week_tags
            from churn_platform.config import load_config

            tags = {**tags, **job_week_tags(job, self.instance, load_config().model())}
        result = runs.execute(job, self.instance, config, out=self.out, tags=tags)
        state = "SUCCESS" if result.success else "FAILED"
        self.out(f"  run {result.run_id}: {state}")
        for message in _failures(result):
            self.out(f"    failed: {message}")
        return result

    def resources(self) -> Mapping[str, Any]:
        """The resources as they load now."""
        return self.definitions().resources or {}

    def evaluate_sensor(self, name: str, cursor: str | None) -> Any:
        """One evaluation of the real sensor ``name`` against the instance from ``cursor``,
        with the resources it requires as they load now."""
        defs = self.definitions()
        sensor = defs.get_sensor_def(name)
        resources = defs.resources or {}
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            resources={k: resources[k] for k in sensor.required_resource_keys},
            definitions=defs,  # a run request names a partition of a job of these definitions
        )
        return sensor.evaluate_tick(context)

    def sensor_tick(self) -> Any:
        """One evaluation of the real ``psi_drift_sensor`` against the real instance, with what
        the sensor daemon does with it: observations recorded, cursor kept."""
        data = self.evaluate_sensor("psi_drift_sensor", self.cursor)
        for event in data.asset_events:
            self.instance.report_runless_asset_event(event)
        self.cursor = data.cursor
        if data.run_requests:
            request = data.run_requests[0]
            self.out(
                f"  psi_drift_sensor: run requested ({request.run_key}): "
                f"{request.tags.get('churn/drift_feature')} PSI "
                f"{request.tags.get('churn/drift_max_psi')}"
            )
        else:
            self.out(f"  psi_drift_sensor: skipped: {data.skip_message}")
        return data

    def schedule_tags(self, week: int) -> dict[str, str]:
        """The real ``weekly_retraining`` schedule's run request for this synthetic week's
        Monday 02:00 UTC, as tags."""
        defs = self.definitions()
        weekly_retraining_schedule = defs.get_schedule_def("weekly_retraining")
        monday = datetime.fromisoformat(week_start(week)).replace(tzinfo=UTC) + timedelta(
            days=1, hours=2
        )
        context = dg.build_schedule_context(
            instance=self.instance,
            scheduled_execution_time=monday,
            repository_def=defs.get_repository_def(),  # its request names a partition
        )
        data = weekly_retraining_schedule.evaluate_tick(context)
        request = data.run_requests[0]  # type: ignore[index]
        partition = {"dagster/partition": request.partition_key} if request.partition_key else {}
        return {
            **request.tags,
            **partition,
            "dagster/schedule_name": weekly_retraining_schedule.name,
            "churn/trigger": "schedule",
        }

    def serving(self) -> str:
        """What production serves now: versions and weights, with the champion named."""
        resources = self.resources()
        weights = resources["deployment"].target().state("production").weights()
        champion = resources["mlflow_registry"].alias_version(r.CHAMPION)
        shown = ", ".join(f"v{v} {w}%" for v, w in sorted(weights.items()) if w) or "nothing"
        return f"{shown} (champion v{champion})" if champion else shown

    def week_number(self) -> int:
        """The synthetic week the next snapshot draws."""
        from churn_platform.config import load_config
        from churn_platform.core.synthetic import week_of
        from churn_platform.defs.week_runs import week_to_run

        return week_of(week_to_run(self.instance, load_config().model()))

    def set_env(self, name: str, value: str) -> None:
        """Set a setting for the rest of the demo (``play`` restores it at the end)."""
        os.environ[name] = value

    def add(self, row: WeekRow) -> None:
        """Record a week's row and print it."""
        self.rows.append(row)
        self.out(f"  => {row.result}: {row.outcome}; production: {row.serving}")


# -- the weeks ------------------------------------------------------------------------------


def week_launch(demo: Demo, number: int) -> WeekRow:
    """A normal week: the whole graph by hand; the first model is released."""
    week = demo.week_number()
    result = demo.run(
        "churn_end_to_end",
        {
            "challenger_model": LAUNCH_MODEL,
            "evaluation_report": FAST_CHECKS,
            "staging_deployment": STAGING,
            "production_deployment": CANARY,
        },
        {"churn/trigger": "manual"},
    )
    released = result.success and _events(result, "production_deployment").get("outcome") == (
        "succeeded"
    )
    return WeekRow(
        number,
        week_start(week),
        "by hand: churn_end_to_end (the first release)",
        _decision(result),
        "released" if released else "failed",
        "canary 5 -> 25 -> 100% succeeded; the first champion"
        if released
        else "; ".join(_failures(result)) or "not released",
        demo.serving(),
        f"run {result.run_id[:8]}: production_deployment (transitions)",
        (result.run_id,),
    )


def _retrain_outcome(result: Any) -> tuple[str, str]:
    """(result code, sentence) of a retraining run that stops at staging."""
    if not result.success:
        failed = [m for m in _failures(result) if m.startswith("staging_deployment")]
        if failed:
            why = failed[0].split(": ", 1)[1].split("; ")[0]
            return "stopped_in_staging", f"{why}; production untouched"
        return "failed", "; ".join(_failures(result))
    staged = _events(result, "staging_deployment")
    if staged.get("action") == "deployed to staging":
        return (
            "staged",
            f"v{staged['candidate_version']} passed staging; it waits at 0% for approval "
            "(churn_release)",
        )
    return "kept", "the gate kept the champion; nothing deployed"


def week_drift(demo: Demo, number: int) -> WeekRow:
    """Customers spend more from now on; the drift sensor requests the retraining run."""
    os.environ["CHURN_SYNTHETIC_SPEND_SHIFT"] = str(DRIFT_SPEND_SHIFT)
    demo.out(f"  customers now spend {DRIFT_SPEND_SHIFT:.0f} more a month (drift)")
    week = demo.week_number()
    tick = demo.sensor_tick()
    if not tick.run_requests:
        return WeekRow(
            number,
            week_start(week),
            "psi_drift_sensor: no run",
            "-",
            "failed",
            f"the drift sensor did not fire: {tick.skip_message}",
            demo.serving(),
            "Automation > psi_drift_sensor",
            (),
        )
    request = tick.run_requests[0]
    tags = {
        **request.tags,
        "dagster/sensor_name": "psi_drift_sensor",
        "dagster/run_key": request.run_key or "",
    }
    result = demo.run(
        "churn_retraining",
        {
            "challenger_model": FAST_CHECKS,
            "evaluation_report": FAST_CHECKS,
            "staging_deployment": STAGING,
        },
        tags,
    )
    code, sentence = _retrain_outcome(result)
    return WeekRow(
        number,
        week_start(week),
        f"psi_drift_sensor: {request.tags['churn/drift_feature']} PSI "
        f"{float(request.tags['churn/drift_max_psi']):.2f} > 0.2 ({request.run_key})",
        _decision(result),
        code,
        sentence,
        demo.serving(),
        f"run {result.run_id[:8]}; churn_snapshot observations (PSI per feature)",
        (result.run_id,),
    )


def _scheduled_retraining(demo: Demo, week: int) -> tuple[Any, str]:
    tick = demo.sensor_tick()
    if tick.run_requests:
        note = "sensor: a new drift episode"
    elif "continues" in (tick.skip_message or ""):
        note = "sensor: the drift episode continues, no second run"
    else:
        note = "sensor: no drift"
    result = demo.run(
        "churn_retraining",
        {
            "challenger_model": FAST_CHECKS,
            "evaluation_report": FAST_CHECKS,
            "staging_deployment": STAGING,
        },
        demo.schedule_tags(week),
    )
    return result, f"weekly_retraining schedule ({note})"


def week_faulty_model(demo: Demo, number: int) -> WeekRow:
    """The new model's servers answer every request with a 500: staging stops it."""
    week = demo.week_number()
    demo.out("  new model servers fail every request this week (CHURN_FAULT_RATE=1)")
    with _environment({"CHURN_FAULT_RATE": "1"}):
        result, trigger = _scheduled_retraining(demo, week)
    code, sentence = _retrain_outcome(result)
    return WeekRow(
        number,
        week_start(week),
        trigger,
        _decision(result),
        code,
        sentence,
        demo.serving(),
        f"run {result.run_id[:8]}: staging_deployment checks",
        (result.run_id,),
    )


def _release(demo: Demo) -> Any:
    return demo.run("churn_release", {"production_deployment": CANARY}, {"churn/trigger": "manual"})


def _release_outcome(result: Any) -> tuple[str, str]:
    meta = _events(result, "production_deployment")
    outcome = meta.get("outcome")
    if outcome == "succeeded":
        return (
            "promoted",
            f"shadow, then canary 5 -> 25 -> 100% succeeded: v{meta['champion_version']} is champion, v{meta['previous_version']} previous",
        )
    if outcome in ("rolled_back", "aborted"):
        return outcome, f"canary {outcome.replace('_', ' ')}: {meta.get('reason')}"
    return "failed", "; ".join(_failures(result)) or str(meta.get("reason", "no release"))


def week_canary_rollback(demo: Demo, number: int) -> WeekRow:
    """A clean retraining is approved, but its production servers fail 60% of requests."""
    week = demo.week_number()
    retrained, trigger = _scheduled_retraining(demo, week)
    code, sentence = _retrain_outcome(retrained)
    run_ids = [retrained.run_id]
    decision = _decision(retrained)
    if code == "staged":
        demo.out("  approved; its production servers fail 60% of requests (CHURN_FAULT_RATE=0.6)")
        with _environment({"CHURN_FAULT_RATE": "0.6"}):
            release = _release(demo)
        run_ids.append(release.run_id)
        code, sentence = _release_outcome(release)
    return WeekRow(
        number,
        week_start(week),
        trigger + ", then approval: churn_release",
        decision,
        code,
        sentence,
        demo.serving(),
        f"run {run_ids[-1][:8]}: production_deployment > canary_analysis",
        tuple(run_ids),
    )


def week_promotion(demo: Demo, number: int) -> WeekRow:
    """Retrained, staged, approved; the canary promotes the new model."""
    week = demo.week_number()
    retrained, trigger = _scheduled_retraining(demo, week)
    code, sentence = _retrain_outcome(retrained)
    run_ids = [retrained.run_id]
    if code == "staged":
        release = _release(demo)
        run_ids.append(release.run_id)
        code, sentence = _release_outcome(release)
    return WeekRow(
        number,
        week_start(week),
        trigger + ", then approval: churn_release",
        _decision(retrained),
        code,
        sentence,
        demo.serving(),
        f"run {run_ids[-1][:8]}: production_deployment; MLflow aliases",
        tuple(run_ids),
    )


WEEKS: tuple[tuple[str, Callable[[Demo, int], WeekRow]], ...] = (
    ("a normal week: the first release", week_launch),
    ("a drift episode triggers retraining", week_drift),
    ("a faulty model is stopped in staging", week_faulty_model),
    ("a canary rolls back", week_canary_rollback),
    ("a promotion", week_promotion),
    ("concept drift: the mechanism turns, the inputs do not", week_concept_drift),
)


def table(rows: list[WeekRow]) -> str:
    """The closing table (markdown)."""
    lines = [
        "| week | snapshot | trigger | gate decision | outcome | production serves | "
        "champion's realized AUC | CBPE estimate | look in the UI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            str(row.week),
            row.as_of,
            row.trigger,
            row.decision,
            f"**{row.result}**: {row.outcome}",
            row.serving,
            row.realized,
            row.estimate,
            row.look,
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def play(home: Path, weeks: int = len(WEEKS), out: Callable[[str], None] = print) -> list[WeekRow]:
    """Play the first ``weeks`` weeks on a fresh ``home``; the table's rows. Model servers are
    stopped whatever happens."""
    from churn_platform.cli import ensure_dagster_home

    if not 1 <= weeks <= len(WEEKS):
        raise ValueError(f"--weeks must be in 1..{len(WEEKS)}, got {weeks}")
    home = home.expanduser().resolve()
    if home.exists() and any(home.iterdir()):
        raise ValueError(f"demo home {home} is not empty; pass a new folder with --home")
    home.mkdir(parents=True, exist_ok=True)
    env: dict[str, str | None] = {name: None for name in CLEARED}
    env.update(
        {
            "CHURN_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "CHURN_SYNTHETIC_ROWS": str(DEMO_ROWS),
            "CHURN_FAULT_SEED": "7",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    # the terminal is for the story; every step's logs and warnings are in the UI's run pages
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with _environment(env), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ensure_dagster_home()
        out(f"demo home: {home} (CHURN_HOME; Dagster instance in {home / 'dagster'})")
        demo = None
        try:
            with dg.DagsterInstance.get() as instance:
                demo = Demo(instance, out)
                for number, (title, play_week) in enumerate(WEEKS[:weeks], start=1):
                    out(f"\nweek {number}: {title}")
                    demo.add(play_week(demo, number))
        finally:
            from churn_platform.targets.local import LocalProcessTarget

            stopped = LocalProcessTarget(home / "deployments").stop_all()
            out(f"\nstopped the demo's {len(stopped)} model-server and router processes")
    rows = demo.rows if demo else []
    out("\n" + table(rows))
    out(
        f"\nSee it in the UI: CHURN_HOME={home} DAGSTER_HOME={home / 'dagster'} "
        "dagster dev -w workspace.yaml, then http://127.0.0.1:3000/runs"
    )
    for row in rows:
        for run_id in row.run_ids:
            out(f"  week {row.week}: http://127.0.0.1:3000/runs/{run_id}")
    out(f"MLflow: mlflow ui --backend-store-uri sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    return rows


def main(home: str | None, weeks: int) -> int:
    """The CLI command: 0 when every week ended as the demo intends, else 1."""
    folder = Path(home) if home else Path(tempfile.mkdtemp(prefix="churn-demo-"))
    try:
        rows = play(folder, weeks)
    except ValueError as exc:
        print(f"demo: {exc}")
        return 2
    unexpected = [
        f"week {r.week}: {r.result}, expected {want}"
        for r, want in zip(rows, EXPECTED, strict=False)
        if r.result != want
    ]
    for line in unexpected:
        print(f"demo: {line}")
    return 1 if unexpected else 0


EXPECTED = ("released", "staged", "stopped_in_staging", "rolled_back", "promoted", "promoted")
