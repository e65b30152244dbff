"""Notifications: one message per rollback, failed blocking check and drift episode.

Each message names the event, the model version, the reason and a link to the run in the
Dagster UI. It goes to a webhook as JSON (``CHURN_WEBHOOK_URL``: the body has ``text`` for
chat tools that accept Slack-style incoming webhooks, plus the fields one by one), and to a
Slack channel through ``dagster-slack`` when ``CHURN_SLACK_TOKEN`` is set. The URL and the
token come in as ``dg.EnvVar``, so the UI shows the variables' names, not their values.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from urllib.parse import quote

import dagster as dg

ROLLBACK = "rollback"
BLOCKING_CHECK_FAILED = "blocking_check_failed"
DRIFT = "drift"
TITLES = {
    ROLLBACK: "production canary rolled back",
    BLOCKING_CHECK_FAILED: "blocking check failed",
    DRIFT: "drift detected, retraining requested",
}


class NotificationError(RuntimeError):
    """A configured channel refused or could not be reached; the message names it."""


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

    def notify(self, event: str, model_version: str, reason: str, link: str) -> list[str]:
        """Send one message to every configured channel; returns the channels used. A channel
        that fails raises ``NotificationError`` after the others were tried."""
        message = Message(event, model_version or "n/a", reason, link)
        sent, errors = [], []
        if self.webhook_url:
            try:
                self._post_webhook(message)
                sent.append("webhook")
            except (OSError, urllib.error.URLError) as exc:
                errors.append(f"CHURN_WEBHOOK_URL: {exc}")
        if self.slack_token:
            try:
                self._post_slack(message)
                sent.append("slack")
            except Exception as exc:  # slack_sdk's errors share no base with OSError
                errors.append(f"Slack ({self.slack_channel}): {exc}")
        if errors:
            raise NotificationError(
                "notification not delivered: " + "; ".join(errors) + " - check the URL/token"
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
