"""Notifications: one message per rollback, failed run (a failed blocking check says which),
drift episode, sensor error, asset that is no longer fresh and episode of an unhealthy
deployment (the serving watchdog).

Each message names the event, the model version, the reason and a link to the run in the
Dagster UI. It goes to a webhook as JSON (``CHURN_WEBHOOK_URL``: the body has ``text`` for
chat tools that accept Slack-style incoming webhooks, plus the fields one by one), and to a
Slack channel through ``dagster-slack`` when ``CHURN_SLACK_TOKEN`` is set. The URL and the
token come in as ``dg.EnvVar``, so the UI shows the variables' names, not their values.

A message that a channel refuses is not dropped: ``deliver`` keeps it in the storage
(``notifications/pending/<key>.json``, with the channels still owed it) and
``retry_pending`` (the ``notification_outbox`` sensor, every tick) sends it again until it
arrives. The key (the run id, the episode) makes a second failure of the same event replace,
not duplicate, the pending one.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from urllib.parse import quote

import dagster as dg

from churn_platform.resources.storage import StorageResource

ROLLBACK = "rollback"
BLOCKING_CHECK_FAILED = "blocking_check_failed"
DRIFT = "drift"
RUN_FAILED = "run_failed"
SENSOR_ERROR = "sensor_error"
NOT_FRESH = "not_fresh"
PERFORMANCE = "performance"
SERVING_UNHEALTHY = "serving_unhealthy"
TITLES = {
    ROLLBACK: "production canary rolled back",
    BLOCKING_CHECK_FAILED: "blocking check failed",
    DRIFT: "drift detected, retraining requested",
    RUN_FAILED: "run failed",
    SENSOR_ERROR: "sensor error",
    NOT_FRESH: "asset is not fresh",
    PERFORMANCE: "performance below the holdout AUC, retraining requested",
    SERVING_UNHEALTHY: "deployment found unhealthy by the serving watchdog",
}
WEBHOOK, SLACK = "webhook", "slack"
PENDING = "notifications/pending"


class NotificationError(RuntimeError):
    """A configured channel refused or could not be reached; the message names it and
    ``failed`` lists the channels that did not receive it."""

    def __init__(self, text: str, failed: Sequence[str] = ()) -> None:
        super().__init__(text)
        self.failed = tuple(failed)


@dataclass(frozen=True)
class Message:
    """What every channel receives."""

    event: str
    model_version: str
    reason: str
    link: str

    @property
    def text(self) -> str:
        """One line for chat: event, version, reason, link."""
        return (
            f"churn_platform: {TITLES.get(self.event, self.event)} - model version "
            f"{self.model_version}: {self.reason} ({self.link})"
        )

    def payload(self) -> dict[str, str]:
        """The webhook's JSON body."""
        return {"text": self.text, **asdict(self)}


class Notifier(dg.ConfigurableResource):
    """Where notifications go; nothing configured means nothing is sent.

    ``slack_api_url`` replaces Slack's API address (a proxy; the tests' local receiver).
    """

    webhook_url: str = ""
    slack_token: str = ""
    slack_channel: str = "#churn-platform"
    slack_api_url: str = ""
    ui_url: str = "http://127.0.0.1:3000"
    timeout_seconds: float = 10.0

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def runs_with_tag_url(self, key: str, value: str) -> str:
        """The UI's run list filtered on one tag (a run a sensor requested but not yet created)."""
        return f"{self.ui_url.rstrip('/')}/runs?q%5B0%5D={quote(f'tag:{key}={value}', safe='')}"

    def channels(self) -> list[str]:
        """The configured channels."""
        return [c for c, on in ((WEBHOOK, self.webhook_url), (SLACK, self.slack_token)) if on]

    def notify(self, event: str, model_version: str, reason: str, link: str) -> list[str]:
        """Send one message to every configured channel; returns the channels used. A channel
        that fails raises ``NotificationError`` after the others were tried."""
        return self.send(Message(event, model_version or "n/a", reason, link))

    def send(self, message: Message, channels: Sequence[str] | None = None) -> list[str]:
        """Send ``message`` to ``channels`` (default: every configured one); returns the
        channels used, or raises ``NotificationError`` naming the ones that failed."""
        sent, errors, failed = [], [], []
        for channel in self.channels() if channels is None else channels:
            try:
                self._post_webhook(message) if channel == WEBHOOK else self._post_slack(message)
                sent.append(channel)
            except Exception as exc:  # slack_sdk's errors share no base with OSError
                where = (
                    "CHURN_WEBHOOK_URL" if channel == WEBHOOK else f"Slack ({self.slack_channel})"
                )
                errors.append(f"{where}: {exc}")
                failed.append(channel)
        if errors:
            raise NotificationError(
                "notification not delivered: " + "; ".join(errors) + " - check the URL/token",
                failed,
            )
        return sent

    def _post_webhook(self, message: Message) -> None:
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(message.payload()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            response.read()

    def _post_slack(self, message: Message) -> None:
        from dagster_slack import SlackResource

        client = SlackResource(token=self.slack_token).get_client()
        if self.slack_api_url:
            client.base_url = self.slack_api_url.rstrip("/") + "/"
        client.timeout = int(self.timeout_seconds)
        client.chat_postMessage(channel=self.slack_channel, text=message.text)


def _pending_key(key: str) -> str:
    return f"{PENDING}/{re.sub(r'[^A-Za-z0-9_.-]', '_', key)[:180]}.json"


def deliver(notifier: Notifier, storage: StorageResource, message: Message, key: str) -> str:
    """Send ``message`` now; when a channel fails, keep it (under ``key``: the event that it
    tells, so that it is owed at most once) for ``retry_pending``. Returns what happened."""
    try:
        sent = notifier.send(message)
    except NotificationError as exc:
        record = {"message": asdict(message), "channels": list(exc.failed), "error": str(exc)}
        storage.write_text(_pending_key(key), json.dumps(record))
        return f"queued for a retry on the next tick ({exc})"
    return f"sent to {', '.join(sent) or 'no channel (none configured)'}"


def retry_pending(notifier: Notifier, storage: StorageResource) -> tuple[int, list[str]]:
    """Send every pending message again to the channels still owed it; a delivered one is
    removed. Returns how many arrived and the errors of the ones still pending."""
    folder = storage.path(PENDING)
    if not folder.exists():
        return 0, []
    delivered, errors = 0, []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".json"):
            continue
        record = json.loads(path.read_text())
        try:
            notifier.send(Message(**record["message"]), record["channels"])
        except NotificationError as exc:
            record["channels"] = list(exc.failed)
            storage.write_text(f"{PENDING}/{path.name}", json.dumps(record))
            errors.append(f"{path.name}: {exc}")
            continue
        path.unlink()
        delivered += 1
    return delivered, errors


def pending_messages(storage: StorageResource) -> list[Message]:
    """The messages waiting for a retry (oldest key first)."""
    folder = storage.path(PENDING)
    if not folder.exists():
        return []
    paths = sorted((p for p in folder.iterdir() if p.name.endswith(".json")), key=lambda p: p.name)
    return [Message(**json.loads(p.read_text())["message"]) for p in paths]
