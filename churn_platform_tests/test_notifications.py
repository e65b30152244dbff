"""Notifications against a real HTTP receiver on 127.0.0.1: one message per rollback, per run
stopped by a failed blocking check and per drift episode, each with version, reason and link;
Slack through dagster-slack's client when a token is set."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import dagster as dg
import pytest

from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.defs import notifications
from churn_platform.resources.data_source import SyntheticSourceResource
from churn_platform.resources.notify import NotificationError, Notifier
from churn_platform_tests.pipeline import resource, sensor
from churn_platform_tests.test_automation import SHIFTED, register

UI = "http://dagster.example:3000"


class Receiver:
    """Records every POST: path, headers and parsed body (JSON or form)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                kind = self.headers.get("Content-Type", "")
                body = (
                    json.loads(raw)
                    if "json" in kind
                    else {k: v[0] for k, v in parse_qs(raw).items()}
                )
                receiver.posts.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                answer = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self) -> list[dict[str, Any]]:
        return [p["body"] for p in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()
    thread.join()


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


def test_one_message_per_rollback(receiver: Receiver) -> None:
    resources = {"notifier": notifier(receiver)}
    with dg.DagsterInstance.ephemeral() as instance:
        promoted = dg.materialize([production_stand_in("succeeded")], instance=instance)
        tick = sensor("rollback_notification").evaluate_tick(
            dg.build_sensor_context(instance=instance, resources=resources)
        )
        assert receiver.posts == []
        rolled = dg.materialize([production_stand_in("rolled_back")], instance=instance)
        tick = sensor("rollback_notification").evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources=resources)
        )
        # the same materialisation on the next tick: no second message
        sensor("rollback_notification").evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources=resources)
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


def failure_tick(instance: dg.DagsterInstance, result: Any, resources: dict[str, Any]) -> None:
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    context = dg.build_run_status_sensor_context(
        sensor_name="blocking_check_notification",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources=resources,
    ).for_run_failure()
    notifications.blocking_check_notification(context)


def test_one_message_per_failed_blocking_check(receiver: Receiver) -> None:
    resources = {"notifier": notifier(receiver)}
    with dg.DagsterInstance.ephemeral() as instance:
        other = dg.materialize([broken_snapshot], instance=instance, raise_on_error=False)
        failure_tick(instance, other, resources)
        assert receiver.posts == []  # a failure without a failed check is the run page's

        failed = dg.materialize(
            [checked_stand_in(passed=False)], instance=instance, raise_on_error=False
        )
        failure_tick(instance, failed, resources)
    [body] = receiver.bodies()
    assert body["event"] == "blocking_check_failed"
    assert body["model_version"] == "12"
    assert "challenger_model.holdout_auc failed (AUC 0.61" in body["reason"]
    assert body["link"] == f"{UI}/runs/{failed.run_id}"


def test_one_message_per_drift_episode(churn_home: Path, receiver: Receiver) -> None:
    version, _ = register(generate(SyntheticSpec(n_rows=3_000, seed=3)))
    resource("mlflow_registry").set_alias("champion", version)
    resources = {
        "mlflow_registry": resource("mlflow_registry"),
        "data_source": SyntheticSourceResource(**SHIFTED),
        "inference_log": resource("inference_log"),
        "notifier": notifier(receiver),
        "storage": resource("storage"),
    }
    cursor = None
    requested = 0
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(2):  # the episode goes on: one run, one message
            data = sensor("psi_drift_sensor").evaluate_tick(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
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
