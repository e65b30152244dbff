"""The JSON answer shape the model server and the router share."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as compact JSON (no spaces: the bodies clients and tests compare)."""
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
