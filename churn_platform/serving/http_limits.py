"""Request-body limits shared by the model server and the router.

A body above the limit is refused with 413 before it is parsed: a ``Content-Length``
over the limit is refused without reading a byte, and a chunked body is read only up
to the limit. A huge request then costs neither memory nor the event loop's time, so
other clients' 1-row requests keep their latency. A body that does not arrive within
the read timeout (a client that sends headers and stalls) gets 408 and its connection
closed, so half-sent bodies cannot pile up. JSON is parsed with a depth bound
(``parse_json``): a deeply nested body is a 400, never Python's ``RecursionError``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import numpy as np
from starlette.requests import Request

# a scoring payload is 3 or 4 levels deep; far below the C parser's recursion limit
MAX_JSON_DEPTH = 64

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
# without escapes a string ends at the next quote: linear, whatever the body
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# an opening bracket as +1, a closing one as -1 (as int8), for a running sum
_STEPS = bytes.maketrans(b"[{]}", bytes([1, 1, 255, 255]))


class BodyTooLarge(Exception):
    """The request body is bigger than the limit; the message says the limit and the fix."""

    def __init__(self, size: int | None, limit: int) -> None:
        got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(
            f"request body is {got}; the limit is {limit} bytes (CHURN_MAX_BODY_BYTES): "
            "send fewer records per request"
        )
        self.limit = limit


class BodyTimeout(Exception):
    """The request body did not arrive within the read timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within {seconds:g} s "
            "(CHURN_BODY_READ_TIMEOUT_SECONDS): send the whole body at once"
        )


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body; ``BodyTooLarge`` as soon as it is known to exceed ``limit``,
    ``BodyTimeout`` when it is not all there after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await _read(request, limit)
    except TimeoutError:
        raise BodyTimeout(timeout) from None


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            size = None
        if size is not None and size > limit:
            raise BodyTooLarge(size, limit)
        if size is not None:
            # the usual case: one read, like Request.body()
            return await request.body()
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of ``body`` (any JSON encoding), or ``ValueError`` when it is not
    JSON, not text, or nested deeper than ``max_depth`` (checked before parsing)."""
    text = (
        body if isinstance(body, str) else body.decode(json.detect_encoding(body), "surrogatepass")
    )
    utf8 = text.encode("utf-8", "surrogatepass")
    # no more brackets than the bound: no deeper either (a 1-row request has three)
    depth = 0 if utf8.count(b"[") + utf8.count(b"{") <= max_depth else json_depth(utf8)
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable below the bound; a 400 all the same
        raise ValueError(f"JSON nested too deep; at most {max_depth} levels") from None


def json_depth(utf8: bytes) -> int:
    """The deepest nesting of arrays and objects in a UTF-8 JSON text (brackets inside
    strings ignored), in linear time and without recursion."""
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", utf8)).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.translate(_STEPS), dtype=np.int8)
    return int(steps.cumsum(dtype=np.int32).max())
