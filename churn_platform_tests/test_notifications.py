"""Notifications against a real HTTP receiver on 127.0.0.1: one message per rollback, per failed
run (a failed blocking check named), per drift episode and per sensor error, each with
version, reason and link; a refused message is sent again on the outbox's next tick; Slack
through dagster-slack's client when a token is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.definitions import build_definitions
from churn_platform.defs import notifications
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.notify import NotificationError, Notifier, pending_messages
from churn_platform.resources.storage import StorageResource
from churn_platform_tests.http_receiver import Receiver
from churn_platform_tests.pipeline import resource, sensor
from churn_platform_tests.test_automation import SHIFTED, register

UI = "http://dagster.example:3000"


def notifier(receiver: Receiver) -> Notifier:
    return Notifier(webhook_url=f"{receiver.url}/hook", ui_url=UI)


def production_stand_in(outcome: str) -> dg.AssetsDefinition:
    """An asset keyed ``production_deployment`` materialised with the real one's metadata."""

    @dg.asset(name=notifications.PRODUCTION)
    def production_deployment() -> dg.Output[int]:
        return dg.Output(
            1,
            metadata={
                "outcome": outcome,
                "reason": "error rate 0.31 > 0.05 at 25%",
                "candidate_version": "7",
                "champion_version": "6",
            },
        )

    return production_deployment


def test_one_message_per_rollback(receiver: Receiver, tmp_path: Path) -> None:
    resources = {"notifier": notifier(receiver), "storage": StorageResource(base_url=str(tmp_path))}
    with dg.DagsterInstance.ephemeral() as instance:
        promoted = dg.materialize([production_stand_in("succeeded")], instance=instance)
        tick = sensor("rollback_notification").evaluate_tick(
            dg.build_sensor_context(
                definitions=build_definitions(), instance=instance, resources=resources
            )
        )
        assert receiver.posts == []
        rolled = dg.materialize([production_stand_in("rolled_back")], instance=instance)
        tick = sensor("rollback_notification").evaluate_tick(
            dg.build_sensor_context(
                definitions=build_definitions(),
                instance=instance,
                cursor=tick.cursor,
                resources=resources,
            )
        )
        # the same materialisation on the next tick: no second message
        sensor("rollback_notification").evaluate_tick(
            dg.build_sensor_context(
                definitions=build_definitions(),
                instance=instance,
                cursor=tick.cursor,
                resources=resources,
            )
        )
    assert "no rollback" not in (tick.skip_message or "")
    [body] = receiver.bodies()
    assert receiver.posts[0]["path"] == "/hook"
    assert body["event"] == "rollback"
    assert body["model_version"] == "7"
    assert "error rate 0.31 > 0.05" in body["reason"]
    assert body["link"] == f"{UI}/runs/{rolled.run_id}"
    assert promoted.run_id not in body["text"] and body["link"] in body["text"]


def checked_stand_in(passed: bool) -> dg.AssetsDefinition:
    """An asset keyed ``challenger_model`` whose blocking check fails the way the real one's
    does (check result, then dg.Failure naming the registered version)."""

    @dg.asset(
        name="challenger_model",
        check_specs=[dg.AssetCheckSpec("holdout_auc", asset="challenger_model", blocking=True)],
    )
    def challenger_model():
        yield dg.AssetCheckResult(
            check_name="holdout_auc",
            passed=passed,
            description="AUC 0.61, lower bound 0.58 < 0.70",
        )
        if not passed:
            raise dg.Failure(
                description="model version 12 failed check(s) holdout_auc",
                metadata={"model_version": "12", "failed_checks": "holdout_auc"},
            )
        yield dg.Output(1)

    return challenger_model


@dg.asset(name="churn_snapshot")
def broken_snapshot() -> int:
    raise RuntimeError("source unreachable")


def failure_tick(instance: dg.DagsterInstance, run_id: str, resources: dict[str, Any]) -> None:
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    [failure] = [
        r.event_log_entry.dagster_event
        for r in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
    ]
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_notification",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources=resources,
    ).for_run_failure()
    notifications.run_failure_notification(context)


def storage_and_notifier(receiver: Receiver, tmp_path: Path) -> dict[str, Any]:
    return {"notifier": notifier(receiver), "storage": StorageResource(base_url=str(tmp_path))}


def test_one_message_per_failed_blocking_check(receiver: Receiver, tmp_path: Path) -> None:
    resources = storage_and_notifier(receiver, tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        failed = dg.materialize(
            [checked_stand_in(passed=False)], instance=instance, raise_on_error=False
        )
        failure_tick(instance, failed.run_id, resources)
    [body] = receiver.bodies()
    assert body["event"] == "blocking_check_failed"
    assert body["model_version"] == "12"
    assert "challenger_model.holdout_auc failed (AUC 0.61" in body["reason"]
    assert body["link"] == f"{UI}/runs/{failed.run_id}"


def test_every_failed_run_notifies_an_unreadable_source_and_a_crash(
    receiver: Receiver, tmp_path: Path
) -> None:
    resources = storage_and_notifier(receiver, tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        unreadable = dg.materialize([broken_snapshot], instance=instance, raise_on_error=False)
        failure_tick(instance, unreadable.run_id, resources)
        # a run whose process died: run monitoring marks it failed, no step failed
        crashed = instance.add_run(
            dg.DagsterRun(job_name="churn_retraining", status=dg.DagsterRunStatus.STARTED)
        )
        instance.report_run_failed(crashed, message="run worker exited unexpectedly")
        failure_tick(instance, crashed.run_id, resources)
    first, second = receiver.bodies()
    assert first["event"] == "run_failed"
    assert "churn_snapshot: " in first["reason"] and "source unreachable" in first["reason"]
    assert first["link"] == f"{UI}/runs/{unreadable.run_id}"
    assert second["event"] == "run_failed" and "exited unexpectedly" in second["reason"]
    assert second["link"] == f"{UI}/runs/{crashed.run_id}"


def drift_resources(receiver: Receiver) -> dict[str, Any]:
    """The drift sensor's resources with a champion whose reference the shifted source
    drifts from."""
    version, _ = register(generate(SyntheticSpec(n_rows=3_000, seed=3)))
    resource("mlflow_registry").set_alias("champion", version)
    return {
        "mlflow_registry": resource("mlflow_registry"),
        "data_source": SyntheticSourceResource(**SHIFTED),
        "inference_log": resource("inference_log"),
        "notifier": notifier(receiver),
        "storage": resource("storage"),
    }


def test_a_refused_drift_notification_is_sent_on_the_next_tick(
    churn_home: Path, receiver: Receiver
) -> None:
    resources = drift_resources(receiver)
    receiver.refuse = 1
    with dg.DagsterInstance.ephemeral() as instance:
        data = sensor("psi_drift_sensor").evaluate_tick(
            dg.build_sensor_context(
                definitions=build_definitions(), instance=instance, resources=resources
            )
        )
        assert len(data.run_requests) == 1  # the retraining does not wait for the message
        assert receiver.posts == []
        [waiting] = pending_messages(resources["storage"])
        assert waiting.event == "drift"
        outbox = {"notifier": resources["notifier"], "storage": resources["storage"]}
        for _ in range(2):  # delivered once, then nothing is owed
            sensor("notification_outbox").evaluate_tick(
                dg.build_sensor_context(
                    definitions=build_definitions(), instance=instance, resources=outbox
                )
            )
    [body] = receiver.bodies()
    assert body["event"] == "drift" and "monthly_spend" in body["reason"]
    assert pending_messages(resources["storage"]) == []


def test_the_outbox_keeps_a_message_until_the_channel_takes_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    resources = storage_and_notifier(receiver, tmp_path)
    receiver.refuse = 3  # both ticks of the run, then the first retry
    with dg.DagsterInstance.ephemeral() as instance:
        failed = dg.materialize([broken_snapshot], instance=instance, raise_on_error=False)
        failure_tick(instance, failed.run_id, resources)
        failure_tick(instance, failed.run_id, resources)  # the same run again: still one owed
        assert len(pending_messages(resources["storage"])) == 1
        context = dg.build_sensor_context(
            definitions=build_definitions(), instance=instance, resources=resources
        )
        with pytest.raises(Exception, match="1 notification\\(s\\) still pending"):
            sensor("notification_outbox").evaluate_tick(context)
        sensor("notification_outbox").evaluate_tick(context)
    [body] = receiver.bodies()
    assert body["event"] == "run_failed" and body["link"] == f"{UI}/runs/{failed.run_id}"


class BrokenRegistry:
    """A registry that cannot be reached."""

    def alias_version(self, alias: str) -> str:
        raise ConnectionError(f"registry unreachable while reading alias {alias}")


def test_a_sensor_error_notifies_once_per_error(receiver: Receiver, churn_home: Path) -> None:
    resources = {
        "mlflow_registry": BrokenRegistry(),
        "data_source": SyntheticSourceResource(**SHIFTED),
        "inference_log": resource("inference_log"),
        "notifier": notifier(receiver),
        "storage": resource("storage"),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(2):  # the same error on two ticks: one message
            with pytest.raises(Exception, match="registry unreachable"):
                sensor("psi_drift_sensor").evaluate_tick(
                    dg.build_sensor_context(
                        definitions=build_definitions(), instance=instance, resources=resources
                    )
                )
    [body] = receiver.bodies()
    assert body["event"] == "sensor_error"
    assert body["reason"].startswith("psi_drift_sensor: ConnectionError: registry unreachable")


def test_one_message_per_drift_episode(churn_home: Path, receiver: Receiver) -> None:
    resources = drift_resources(receiver)
    version = resources["mlflow_registry"].alias_version("champion")
    cursor = None
    requested = 0
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(2):  # the episode goes on: one run, one message
            data = sensor("psi_drift_sensor").evaluate_tick(
                dg.build_sensor_context(
                    definitions=build_definitions(),
                    instance=instance,
                    cursor=cursor,
                    resources=resources,
                )
            )
            cursor = data.cursor
            requested += len(data.run_requests)
    assert requested == 1
    [body] = receiver.bodies()
    assert body["event"] == "drift"
    assert body["model_version"] == version
    assert "PSI" in body["reason"] and "monthly_spend" in body["reason"]
    assert body["link"].startswith(f"{UI}/runs?q%5B0%5D=tag%3Adagster%2Frun_key%3D")


def test_slack_through_dagster_slack(receiver: Receiver) -> None:
    slack = Notifier(
        slack_token="xoxb-test-token",
        slack_channel="#churn-alerts",
        slack_api_url=f"{receiver.url}/api/",
        ui_url=UI,
    )
    assert slack.notify("rollback", "7", "rolled_back: error rate", f"{UI}/runs/abc") == ["slack"]
    [post] = receiver.posts
    assert post["path"] == "/api/chat.postMessage"
    assert post["headers"]["Authorization"] == "Bearer xoxb-test-token"
    assert post["body"]["channel"] == "#churn-alerts"
    assert "model version 7" in post["body"]["text"] and f"{UI}/runs/abc" in post["body"]["text"]


def test_unreachable_webhook_names_the_setting(receiver: Receiver) -> None:
    dead = Notifier(webhook_url=f"{receiver.url.rsplit(':', 1)[0]}:1/hook")
    with pytest.raises(NotificationError, match="CHURN_WEBHOOK_URL"):
        dead.notify("drift", "1", "PSI", "link")
