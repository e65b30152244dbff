"""The router's admin endpoints: the bearer token and the bodies of ``PUT /-/weights`` and
``PUT /-/mirror``."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from churn_platform.serving.http_limits import BodyTimeout, BodyTooLarge, parse_json, read_body
from churn_platform.serving.responses import json_response
from churn_platform.serving.router.table import Backend, parse_table

ADMIN_TOKEN_VAR = "CHURN_ROUTER_ADMIN_TOKEN"
ADMIN_BODY_BYTES = 1_000_000  # a backend table is a few hundred bytes


def refused(request: Request, token: str) -> Response | None:
    """None if the request carries the admin ``token``, else the 401/403 answer."""
    if not token:
        return json_response(
            {
                "error": "admin endpoints are disabled: start the router with "
                f"{ADMIN_TOKEN_VAR} set and send it as 'Authorization: Bearer <token>'"
            },
            403,
        )
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        return json_response(
            {
                "error": "PUT /-/weights needs 'Authorization: Bearer <token>'; the token "
                "is in the environment's state file (mode 0600)"
            },
            401,
            {"www-authenticate": "Bearer"},
        )
    return None


async def requested_json(request: Request, timeout: float) -> Any:
    """An admin request's JSON body, or the 413/408/400 answer saying why not
    (``timeout``: seconds the body may take to arrive)."""
    try:
        return parse_json(await read_body(request, ADMIN_BODY_BYTES, timeout))
    except BodyTooLarge as exc:
        return json_response({"error": str(exc)}, 413)
    except BodyTimeout as exc:
        return json_response({"error": str(exc)}, 408, {"connection": "close"})
    except ValueError as exc:
        return json_response({"error": f"body is not valid JSON: {exc}"}, 400)


async def requested_table(
    request: Request, current: Mapping[str, Backend], timeout: float
) -> dict[str, Backend] | Response:
    """The table a ``PUT /-/weights`` asks for, or the 413/408/400/422 answer saying why
    not (``timeout``: seconds the body may take to arrive)."""
    payload = await requested_json(request, timeout)
    if isinstance(payload, Response):
        return payload
    try:
        return parse_table(payload, current)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 422)
