"""One request forwarded to the model server the weighted choice picked."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response

from churn_platform.serving.responses import json_response
from churn_platform.serving.router.table import Backend

FORWARDED_HEADERS = ("content-type", "accept")
INVOCATIONS = "/invocations"
# what a reused connection the backend closed while idle raises: reset, or closed with no
# answer (a timeout or a refused connection is not retried: the backend is slow or down)
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def no_traffic(path: str) -> Response:
    """503: no version carries traffic (in ``path``'s protocol)."""
    message = "no model version carries traffic; PUT /-/weights to route some"
    if path == INVOCATIONS:
        return json_response({"error_code": "TEMPORARILY_UNAVAILABLE", "message": message}, 503)
    return json_response({"error": message}, 503)


def too_large(path: str, message: str) -> Response:
    """413: the body is over the limit (in ``path``'s protocol)."""
    if path == INVOCATIONS:
        return json_response({"error_code": "RESOURCE_LIMIT_EXCEEDED", "message": message}, 413)
    return json_response({"error": message}, 413)


def timed_out(path: str, message: str) -> Response:
    """408: the body did not arrive in time; the connection is closed."""
    close = {"connection": "close"}
    if path == INVOCATIONS:
        body = {"error_code": "REQUEST_TIMEOUT", "message": message}
        return json_response(body, 408, close)
    return json_response({"error": message}, 408, close)


async def forward(
    client: httpx.AsyncClient, backend: Backend, path: str, request: Request, body: bytes
) -> tuple[str, Response]:
    """(status for the counter, answer): the backend's answer, tagged with its version, or
    502 with the reason when it cannot be reached (no retry on another version: a broken
    canary shows up as errors instead of being hidden). A connection that turns out dead
    before any byte of the answer is retried once on the same version."""
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED_HEADERS}
    try:
        try:
            upstream = await client.post(backend.url + path, content=body, headers=headers)
        except STALE_CONNECTION:
            # a pooled keep-alive connection the backend had closed: nothing was answered,
            # so the request goes once more, on a fresh connection
            upstream = await client.post(backend.url + path, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return "502", json_response(
            {
                "error": f"model version {backend.version} at {backend.url} did not answer: "
                f"{type(exc).__name__}: {exc}"
            },
            502,
            {"x-model-version": backend.version},
        )
    return str(upstream.status_code), Response(
        upstream.content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type"),
        headers={"x-model-version": backend.version},
    )
