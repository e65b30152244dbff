"""A real HTTP receiver on 127.0.0.1 for the notification and alerting tests: it records every
POST (path, headers, parsed body) and can refuse the next ones (503), as a channel that is
down does. The ``receiver`` fixture (``conftest.py``) runs one per test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class Receiver:
    """Records every POST: path, headers and parsed body (JSON or form)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.refuse = 0  # answer the next N posts with 503 (and record nothing)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if receiver.refuse > 0:
                    receiver.refuse -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
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


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver serving on a thread until the block ends."""
    rec = Receiver()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()
        thread.join()
