"""The one top-level guard of every request a model server or router answers.

Whatever a route raises ends here instead of in Starlette's error page and uvicorn's
traceback: an unexpected exception is answered 500 (in the path's protocol) and counted,
so the error-rate alert sees it; a client that hangs up mid-body is one short log line
and a count, not a traceback. Either way the connection is left in a state uvicorn can
keep alive or close cleanly: no other client's request on a pooled connection fails.
Routes still answer every input problem themselves (4xx); this is the net under them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from churn_platform.serving.responses import json_response

log = logging.getLogger("churn_platform.serving")

CLIENT_CLOSED = 499  # nginx's status for "the client closed the request"

# (path, status, seconds) -> None: how the app counts an answer the guard gave
Count = Callable[[str, int, float], None]


class RequestGuard:
    """ASGI middleware: unexpected exceptions become a counted 500, disconnects a count."""

    def __init__(self, app: ASGIApp, count: Count) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        path = scope.get("path", "")
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.info("%s %s: the client closed the connection mid-body", scope["method"], path)
            self.count(path, CLIENT_CLOSED, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - the net: counted and answered, not raised
            log.exception("%s %s: unexpected %s", scope["method"], path, type(exc).__name__)
            self.count(path, 500, time.perf_counter() - start)
            if not started:
                await internal_error(path, exc)(scope, receive, send)


def internal_error(path: str, exc: Exception) -> Response:
    """The 500 answer, in ``/invocations``' MLflow shape or the platform's own."""
    message = f"internal error: {type(exc).__name__}; the server log has the details"
    if path == "/invocations":
        return json_response({"error_code": "INTERNAL_ERROR", "message": message}, 500)
    return json_response({"error": message}, 500)
