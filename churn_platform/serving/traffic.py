"""A bounded synthetic traffic generator for local canaries.

On a laptop nobody calls the production router, and a canary needs requests to
judge ("silence is not success"). When enabled, the production deployment replays
holdout rows through the router at a fixed rate during the analysis, in a thread
that stops when told or after ``max_seconds``. Only loopback URLs are accepted.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

import httpx


class TrafficGenerator:
    """Send ``rate`` requests per second of ``records`` to ``url``/predict until stopped."""

    def __init__(
        self,
        url: str,
        records: list[dict[str, object]],
        rate: float = 20.0,
        max_seconds: float = 600.0,
    ):
        host = urlparse(url).hostname or ""
        if not (host == "localhost" or host.startswith("127.") or host == "::1"):
            raise ValueError(f"synthetic traffic goes only to loopback addresses, not {url!r}")
        if rate <= 0:
            raise ValueError(f"traffic rate must be > 0 requests/s, got {rate!r}")
        if not records:
            raise ValueError("traffic generator needs at least one record to send")
        self.url, self.records, self.rate, self.max_seconds = url, records, rate, max_seconds
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-traffic", daemon=True)

    def __enter__(self) -> TrafficGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                record = self.records[self.sent % len(self.records)]
                try:
                    client.post(f"{self.url}/predict", json={"records": [record]})
                except httpx.HTTPError:
                    self.failed += 1
                self.sent += 1
                self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
