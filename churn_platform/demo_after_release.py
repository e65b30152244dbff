"""The demo's after-release steps: real traffic with customer ids, ``model_performance`` on
the prediction week, and ticks of the real ``performance_sensor``.

Production scores in real time, so the prediction week is the calendar week holding the
moment the demo sends its requests. The customers it sends are the synthetic world's draw
for that week (the data source's knobs, ``as_of`` the week's Sunday): the customers whose
outcomes the synthetic outcome source gives for the week, so every prediction joins its
outcome. ``model_performance`` then judges the week as of the day its outcomes are final
(the week's end plus the spec's ``label_delay_days``): the demo fast-forwards the delay,
nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg
import httpx
import pandas as pd

from churn_platform.core import performance as perf
from churn_platform.core import records as r
from churn_platform.core.synthetic import week_of, week_start
from churn_platform.resources.prediction_log import week_predictions
from churn_platform.serving.integration import records

if TYPE_CHECKING:
    from churn_platform.demo import Demo, WeekRow

BATCH = 250  # records per /predict request
LOG_DEADLINE_SECONDS = 120.0


def prediction_week(now: float) -> str:
    """The Sunday (YYYY-MM-DD, UTC) starting the prediction week that holds ``now``."""
    day = pd.Timestamp(now, unit="s", tz="UTC").normalize()
    sunday = day - pd.Timedelta(days=(day.dayofweek + 1) % 7)
    return sunday.date().isoformat()


def mature_day(week: str, label_delay_days: int) -> str:
    """The first day (YYYY-MM-DD) on which every outcome of ``week`` is final."""
    return pd.Timestamp(perf.matures_at(week, label_delay_days), unit="s").date().isoformat()


def _logged_ids(demo: Demo, week: str) -> int:
    """Predictions of ``week`` in the servers' logs that carry an entity id."""
    resources = demo.resources()
    start, end = perf.week_bounds(week)
    frame = week_predictions(
        resources["inference_log"], resources["mlflow_registry"].spec_of_version, start, end
    )
    return int(frame["entity_id"].notna().sum()) if len(frame) else 0


def serve_week(demo: Demo, week: str) -> int:
    """Send the synthetic world's customers of ``week`` to the production router, each with
    its customer id; wait until the servers' logs hold them (they flush a buffered batch on
    the next request a second later, so the last record is re-sent until they do). Returns
    the customers scored."""
    from churn_platform.config import load_config

    spec = load_config().model().spec
    resources = demo.resources()
    source = resources["data_source"].dated(week_of(week))
    frame = source.snapshot(spec=spec)[0].frame
    endpoint = resources["deployment"].target().state("production").endpoint
    body = records(frame, spec)
    for record, entity in zip(body, frame[spec.id_column].astype(str), strict=True):
        record[spec.id_column] = entity
    before = _logged_ids(demo, week)
    with httpx.Client(timeout=30.0) as client:

        def send(batch: list[dict[str, object]]) -> None:
            answer = client.post(f"{endpoint}/predict", json={"records": batch})
            answer.raise_for_status()

        for first in range(0, len(body), BATCH):
            send(body[first : first + BATCH])
        deadline = time.monotonic() + LOG_DEADLINE_SECONDS
        while _logged_ids(demo, week) < before + len(body):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the production servers' logs did not show the {len(body)} predictions "
                    f"of week {week} within {LOG_DEADLINE_SECONDS:.0f} s"
                )
            time.sleep(1.2)
            send(body[-1:])
    demo.out(f"  production scored week {week}'s {len(body)} customers, with their ids")
    return len(body)


def judge_week(demo: Demo, week: str, as_of: str) -> tuple[bool, dict[str, Any]]:
    """Run ``model_performance`` on the instance for the prediction week ``week``, judged as
    of ``as_of``: (success, the materialisation's metadata)."""
    from churn_platform.demo import _events, _failures

    defs = demo.definitions()
    key = dg.AssetKey("model_performance")
    job = defs.resolve_implicit_job_def_def_for_assets([key])
    assert job is not None  # the asset is in the definitions
    demo.out(f"  running model_performance (week {week}, judged as of {as_of}) ...")
    result = job.execute_in_process(
        instance=demo.instance,
        asset_selection=[key],
        partition_key=week,
        run_config={"ops": {"model_performance": {"config": {"as_of": as_of}}}},
        tags={"churn/trigger": "manual"},
        raise_on_error=False,
    )
    demo.out(f"  run {result.run_id}: {'SUCCESS' if result.success else 'FAILED'}")
    for message in _failures(result):
        demo.out(f"    failed: {message}")
    return result.success, {**_events(result, "model_performance"), "run_id": result.run_id}


def performance_tick(demo: Demo) -> Any:
    """One evaluation of the real ``performance_sensor`` against the instance, its cursor
    kept between ticks."""
    data = demo.evaluate_sensor("performance_sensor", demo.performance_cursor)
    demo.performance_cursor = data.cursor
    if data.run_requests:
        request = data.run_requests[0]
        demo.out(
            f"  performance_sensor: run requested ({request.run_key}): realized AUC "
            f"{request.tags['churn/performance_auc']} vs holdout "
            f"{request.tags['churn/holdout_auc']}"
        )
    else:
        demo.out(f"  performance_sensor: skipped: {data.skip_message}")
    return data


def _auc_cells(meta: Mapping[str, Any], version: str) -> tuple[str, str]:
    """(realized AUC, CBPE estimate) of ``version`` in a ``model_performance`` week."""
    realized = meta.get(f"realized_auc_v{version}")
    estimate = meta.get(f"estimated_auc_v{version}")
    return (
        "-" if realized is None else f"{realized:.3f} (v{version})",
        "-" if estimate is None else f"{estimate:.3f} (blind to concept drift)",
    )


def week_concept_drift(demo: Demo, number: int) -> WeekRow:
    """The churn mechanism turns, the inputs do not: PSI is quiet, the realized AUC on the
    week's matured outcomes falls, the performance sensor requests one retraining run."""
    from churn_platform.config import load_config
    from churn_platform.demo import (
        CANARY,
        FAST_CHECKS,
        STAGING,
        WeekRow,
        _decision,
        _release_outcome,
        _retrain_outcome,
    )

    demo.set_env("CHURN_SYNTHETIC_CONCEPT_DRIFT", "1")
    demo.out("  customers now churn for other reasons: the contract and tenure effects turn")
    demo.out("  around (CHURN_SYNTHETIC_CONCEPT_DRIFT=1); no feature's distribution moves")
    week = demo.week_number()
    champion = demo.resources()["mlflow_registry"].alias_version(r.CHAMPION)
    served = prediction_week(time.time())
    demo.set_env("CHURN_PERFORMANCE_START", served)
    serve_week(demo, served)
    tick = demo.sensor_tick()
    fired = tick.run_requests or "continues" in (tick.skip_message or "")
    quiet = "PSI above the threshold" if fired else "PSI quiet"
    delay = load_config().model().spec.outcomes.label_delay_days  # type: ignore[union-attr]
    judged, meta = judge_week(demo, served, mature_day(served, delay))
    realized, estimate = _auc_cells(meta, str(champion))
    demo.out(f"  week {served}: realized AUC {realized}, CBPE estimate {estimate}")
    first = performance_tick(demo)
    again = performance_tick(demo)
    look = f"run {meta['run_id'][:8]}: model_performance {served}"
    if not judged or not first.run_requests or again.run_requests:
        why = "the performance sensor did not request exactly one run for the episode"
        return WeekRow(
            number, week_start(week), "performance_sensor: no run", "-", "failed", why,
            demo.serving(), look, (meta["run_id"],), realized, estimate,
        )  # fmt: skip
    request = first.run_requests[0]
    tags = {
        **request.tags,
        "dagster/sensor_name": "performance_sensor",
        "dagster/run_key": request.run_key or "",
    }
    demo.out("  the spec's bars were set for the old mechanism: its contract invariance")
    demo.out("  (annual lowers churn) no longer holds and the new one is harder to rank")
    demo.out("  (AUC about 0.83): the challenger is checked with the invariance waived and")
    demo.out("  min_auc 0.7 (the gate still needs it to beat the champion on this week's holdout)")
    challenger = {**FAST_CHECKS, "min_invariance_fraction": 0.0, "min_auc": 0.7}
    ops = {"challenger_model": challenger, "evaluation_report": FAST_CHECKS}
    retrained = demo.run("churn_retraining", {**ops, "staging_deployment": STAGING}, tags)
    code, sentence = _retrain_outcome(retrained)
    run_ids = [meta["run_id"], retrained.run_id]
    if code == "staged":
        release = demo.run(
            "churn_release", {"production_deployment": CANARY}, {"churn/trigger": "manual"}
        )
        run_ids.append(release.run_id)
        code, sentence = _release_outcome(release)
    return WeekRow(
        number,
        week_start(week),
        f"performance_sensor: realized AUC {request.tags['churn/performance_auc']} < holdout "
        f"{request.tags['churn/holdout_auc']} on week {served} ({request.run_key}; "
        f"psi_drift_sensor: {quiet}; a second tick: no run), then approval: churn_release",
        _decision(retrained),
        code,
        sentence,
        demo.serving(),
        look + f"; run {run_ids[-1][:8]}: production_deployment",
        tuple(run_ids),
        realized,
        estimate,
    )
