"""One request forwarded to the model server the weighted choice picked.

The request id (the client's ``X-Request-Id``, or one the router generates) goes to the
model server as its ``X-Request-Id``, so the server logs the request under the id the
router answers with; every answer of the router carries it as ``X-Request-Id``.
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response

from churn_platform.serving.request_ids import REQUEST_ID_HEADER
from churn_platform.serving.responses import json_response
from churn_platform.serving.router.table import Backend

FORWARDED_HEADERS = ("content-type", "accept")
INVOCATIONS = "/invocations"
# what a reused connection the backend closed while idle raises: reset, or closed with no
# answer (a timeout or a refused connection is not retried: the backend is slow or down)
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def refused(path: str, status: int, code: str, message: str, headers: dict[str, str]) -> Response:
    """The router's own error answer in ``path``'s protocol (MLflow's body on
    ``/invocations``, ``{"error"}`` on ``/predict``)."""
    if path == INVOCATIONS:
        return json_response({"error_code": code, "message": message}, status, headers)
    return json_response({"error": message}, status, headers)


def bad_request_id(path: str, message: str) -> Response:
    """400: the ``X-Request-Id`` header cannot be taken (too long, control characters)."""
    return refused(path, 400, "BAD_REQUEST", message, {})


def no_traffic(path: str, request_id: str) -> Response:
    """503: no version carries traffic (in ``path``'s protocol)."""
    message = "no model version carries traffic; PUT /-/weights to route some"
    return refused(path, 503, "TEMPORARILY_UNAVAILABLE", message, {REQUEST_ID_HEADER: request_id})


def too_large(path: str, message: str, request_id: str) -> Response:
    """413: the body is over the limit (in ``path``'s protocol)."""
    headers = {REQUEST_ID_HEADER: request_id}
    return refused(path, 413, "RESOURCE_LIMIT_EXCEEDED", message, headers)


def timed_out(path: str, message: str, request_id: str) -> Response:
    """408: the body did not arrive in time; the connection is closed."""
    headers = {"connection": "close", REQUEST_ID_HEADER: request_id}
    return refused(path, 408, "REQUEST_TIMEOUT", message, headers)


async def forward(
    client: httpx.AsyncClient,
    backend: Backend,
    path: str,
    request: Request,
    body: bytes,
    request_id: str,
) -> tuple[str, Response]:
    """(status for the counter, answer): the backend's answer, tagged with its version and
    ``request_id`` (sent to the backend as its ``X-Request-Id``), or 502 with the reason
    when it cannot be reached (no retry on another version: a broken canary shows up as
    errors instead of being hidden). A connection that turns out dead before any byte of
    the answer is retried once on the same version."""
    headers = {k: v for k, v in request.headers.items() if k in FORWARDED_HEADERS}
    headers[REQUEST_ID_HEADER] = request_id
    tags = {"x-model-version": backend.version, REQUEST_ID_HEADER: request_id}
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
            tags,
        )
    return str(upstream.status_code), Response(
        upstream.content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type"),
        headers=tags,
    )
