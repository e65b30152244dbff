"""Request-body limits shared by the model server and the router.

A body above the limit is refused with 413 before it is parsed: a ``Content-Length``
over the limit is refused without reading a byte, and a chunked body is read only up
to the limit. A huge request then costs neither memory nor the event loop's time, so
other clients' 1-row requests keep their latency.
"""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The request body is bigger than the limit; the message says the limit and the fix."""

    def __init__(self, size: int | None, limit: int) -> None:
        got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(
            f"request body is {got}; the limit is {limit} bytes (CHURN_MAX_BODY_BYTES): "
            "send fewer records per request"
        )
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ``BodyTooLarge`` as soon as it is known to exceed ``limit``."""
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
