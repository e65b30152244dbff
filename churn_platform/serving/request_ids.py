"""The ids that join a prediction to its outcome: the request id and the entity id.

A scoring request (``/predict``, ``/invocations``, on a model server or a router) carries
an optional ``X-Request-Id`` header; without one (or with an empty one) a fresh id is
generated. Either way the id is answered as the ``X-Request-Id`` response header, forwarded
by a router to the model server it picks (so both ends know the request by the same id),
and written on every inference log row of the request. A record may carry the spec's
entity id column (``customer_id`` in the shipped spec): it is taken out of the record
before validation and scoring, so it never reaches the model, and echoed and logged
beside the probability.

Checks (``ValueError`` naming the header or field; the routes answer it as a 400/422):
a request id is 1 to ``MAX_REQUEST_ID_CHARS`` printable ASCII characters (no control
characters); an entity id is a string (1 to ``MAX_ENTITY_ID_CHARS`` characters, no control
characters) or a whole number (logged as its decimal string), or null for none.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128
MAX_ENTITY_ID_CHARS = 256


def new_request_id() -> str:
    """A fresh request id (32 hex digits)."""
    return uuid.uuid4().hex


def _control_characters(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def request_id_of(headers: Mapping[str, str]) -> str:
    """The request's ``X-Request-Id`` header, checked, or a fresh id when it has none.

    A header longer than ``MAX_REQUEST_ID_CHARS`` or holding anything but printable ASCII
    is a ``ValueError`` naming the header and what to send.
    """
    given = headers.get(REQUEST_ID_HEADER, "")
    if not given:
        return new_request_id()
    if len(given) > MAX_REQUEST_ID_CHARS:
        raise ValueError(
            f"header X-Request-Id is {len(given)} characters long; send at most "
            f"{MAX_REQUEST_ID_CHARS} (or none, and the server makes one)"
        )
    if _control_characters(given) or not given.isascii():
        raise ValueError(
            f"header X-Request-Id {given[:40]!r} holds control or non-ASCII characters; "
            "send printable ASCII only (e.g. a UUID)"
        )
    return given


def entity_id_value(value: Any, where: str) -> str | None:
    """A record's entity id as the string logged and echoed (None stays None).

    ``where`` names the field in the error (``records[3].customer_id``): anything but a
    string or a whole number (a float, a bool, a list, an object) is a ``ValueError``, as
    is an empty or over-long string or one with control characters.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        raise ValueError(
            f"{where} is the entity id and must be a string or a whole number, got "
            f"{shown} ({type(value).__name__})"
        )
    if not value or len(value) > MAX_ENTITY_ID_CHARS:
        raise ValueError(
            f"{where} is the entity id and must be 1 to {MAX_ENTITY_ID_CHARS} characters, "
            f"got {len(value)}; send null (or leave it out) for a record without one"
        )
    if _control_characters(value):
        raise ValueError(
            f"{where} is the entity id and holds control characters ({value[:40]!r}); "
            "send printable text"
        )
    return value
