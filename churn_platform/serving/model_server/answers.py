"""The two scoring protocols' answers, without HTTP: how a request body becomes records,
and how each outcome becomes a status and a JSON body.

``/predict`` is the platform's own (``{"records": [...]}`` in, ``probabilities`` out, errors
as ``{"error", "model_version"}``); ``/invocations`` is MLflow's scoring protocol
(``predictions`` out, errors as ``{"error_code", "message"}``, every answer carrying
``x-model-version``).

Both echo the request id (``X-Request-Id``, given or generated) as a response header on
every answer once it is known; a scored answer also carries it in the body as
``request_id``, and, when some record carried the spec's entity id, ``entity_ids``: one
per prediction, in order (null for a record without one). MLflow clients read
``predictions`` and ignore the other fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from churn_platform.serving.http_limits import BodyTimeout, BodyTooLarge, parse_json
from churn_platform.serving.mlflow_protocol import error_body, records_from_invocation
from churn_platform.serving.model_server.schema import InputError, InputSchema, quote
from churn_platform.serving.model_server.scoring import Scored
from churn_platform.serving.request_ids import REQUEST_ID_HEADER

# a 408 closes the connection: the rest of the body may still be on its way
CLOSE = {"connection": "close"}


def _id_fields(request_id: str, entity_ids: list[str | None]) -> dict[str, Any]:
    """What a scored body adds: the request id, and the entity ids when some record had one."""
    fields: dict[str, Any] = {"request_id": request_id}
    if any(e is not None for e in entity_ids):
        fields["entity_ids"] = entity_ids
    return fields


class Answer(NamedTuple):
    """An HTTP answer as data: status, JSON body, extra headers; for the metrics, the
    ``scores`` answered and the ``observed`` status (an MLflow 400 may stand for a 422 of
    the model)."""

    status: int
    body: Any
    headers: dict[str, str] | None = None
    observed: int | None = None
    scores: np.ndarray | None = None


class PredictAnswers:
    """``POST /predict``."""

    path = "/predict"

    def __init__(self, version: str, request_id: str | None = None) -> None:
        self.version = version
        self.request_id = request_id
        self.headers = {REQUEST_ID_HEADER: request_id} if request_id else {}

    def records(
        self, body: bytes, content_type: str | None, schema: InputSchema
    ) -> list[Mapping[str, Any]]:
        """The records of a request body, or an ``InputError`` saying what to send."""
        try:
            payload = parse_json(body)
        except ValueError as exc:
            raise InputError(
                f"body is not valid JSON ({quote(str(exc))}); send "
                f"{schema.example()} with Content-Type application/json",
                400,
            ) from None
        return schema.records_from_payload(payload)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> Answer:
        body = {"error": message, "model_version": self.version}
        if self.request_id:
            body["request_id"] = self.request_id
        return Answer(status, body, {**self.headers, **(extra or {})})

    def unavailable(self, detail: str) -> Answer:
        """The model is not loaded (yet, or at all)."""
        return self._error(503, detail)

    def too_large(self, exc: BodyTooLarge) -> Answer:
        """The body is over the limit."""
        return self._error(413, str(exc))

    def timed_out(self, exc: BodyTimeout) -> Answer:
        """The body did not arrive in time: 408, and the connection is closed."""
        return self._error(408, str(exc), CLOSE)

    def refused(self, exc: InputError) -> Answer:
        """The input is not what the model takes."""
        return self._error(exc.status, str(exc))

    def scored(self, outcome: Scored, entity_ids: list[str | None]) -> Answer:
        """The probabilities (with the ids), or the scoring failure."""
        if outcome.scores is None:
            return self._error(outcome.status, outcome.error)
        body = {"model_version": self.version, "probabilities": outcome.scores.tolist()}
        body.update(_id_fields(self.request_id or "", entity_ids))
        return Answer(200, body, self.headers, scores=outcome.scores)


class InvocationAnswers:
    """``POST /invocations`` (MLflow's scoring protocol)."""

    path = "/invocations"

    def __init__(self, version: str, request_id: str | None = None) -> None:
        self.request_id = request_id
        self.headers = {"x-model-version": version}
        if request_id:
            self.headers[REQUEST_ID_HEADER] = request_id

    def records(
        self, body: bytes, content_type: str | None, schema: InputSchema
    ) -> list[Mapping[str, Any]]:
        """The records of a request body, or a ``ProtocolError`` saying what to send."""
        return records_from_invocation(body, content_type, schema)

    def _error(self, status: int, code: str, message: str, observed: int | None = None) -> Answer:
        body = {"error_code": code, "message": message}
        return Answer(status, body, self.headers, observed)

    def unavailable(self, detail: str) -> Answer:
        """The model is not loaded (yet, or at all)."""
        return self._error(503, "TEMPORARILY_UNAVAILABLE", detail)

    def too_large(self, exc: BodyTooLarge) -> Answer:
        """The body is over the limit."""
        return self._error(413, "RESOURCE_LIMIT_EXCEEDED", str(exc))

    def timed_out(self, exc: BodyTimeout) -> Answer:
        """The body did not arrive in time: 408, and the connection is closed."""
        body = {"error_code": "REQUEST_TIMEOUT", "message": str(exc)}
        return Answer(408, body, {**self.headers, **CLOSE})

    def refused(self, exc: InputError) -> Answer:
        """MLflow answers every input problem with 400 BAD_REQUEST; so do we."""
        status = exc.status if exc.status in (413, 415) else 400
        return Answer(status, error_body(exc), self.headers)

    def scored(self, outcome: Scored, entity_ids: list[str | None]) -> Answer:
        """The predictions (with the ids), or the scoring failure (4xx as 400, as MLflow does)."""
        if outcome.scores is None:
            client = outcome.status < 500
            status = 400 if client else outcome.status
            code = "BAD_REQUEST" if client else "INTERNAL_ERROR"
            return self._error(status, code, outcome.error, observed=outcome.status)
        body = {"predictions": outcome.scores.tolist()}
        body.update(_id_fields(self.request_id or "", entity_ids))
        return Answer(200, body, self.headers, scores=outcome.scores)
