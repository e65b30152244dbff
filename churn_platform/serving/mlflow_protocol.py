"""MLflow's scoring protocol (``mlflow models serve``'s ``/invocations``) on our servers.

``records_from_invocation(body, content_type, schema)`` turns an ``/invocations`` request
into the list of records ``/predict`` takes, following MLflow 3's
``mlflow.pyfunc.scoring_server`` rules:

- ``application/json``: an object with exactly one of ``dataframe_split``
  (``{"columns": [...], "data": [[...]], "index": [...]}``), ``dataframe_records``
  (a list of objects), ``instances`` or ``inputs`` (a list of objects, or an object of
  column -> list of values); an optional ``params`` field is ignored (the churn model
  takes none). A bare list is refused, as MLflow refuses it.
- ``text/csv``: a header line with the column names, one line per record (what
  ``DataFrame.to_csv(index=False)`` writes); empty cells are missing values.
- Any other content type is a 415; a charset other than UTF-8 is a 415.

Errors use MLflow's body, ``{"error_code": "BAD_REQUEST", "message": ...}``, so a client
written for ``mlflow models serve`` reads them unchanged; the message names the field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from churn_platform.serving.http_limits import parse_json
from churn_platform.serving.model_server.schema import MAX_RECORDS, InputError, InputSchema, quote

DF_RECORDS = "dataframe_records"
DF_SPLIT = "dataframe_split"
INSTANCES = "instances"
INPUTS = "inputs"
SUPPORTED_FORMATS = (DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS)
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"

REQUIRED_INPUT_FORMAT = (
    "The input must be a JSON dictionary with exactly one of the input fields "
    + ", ".join(SUPPORTED_FORMATS)
)


def _example(schema: InputSchema) -> str:
    """'; e.g. {"dataframe_split": ...}' naming one of the served model's own columns."""
    name, value = schema.example_field()
    split = f'{{"columns": ["{name}", ...], "data": [[{value}, ...]]}}'
    return f'; e.g. {{"dataframe_split": {split}}}'


class ProtocolError(InputError):
    """A request refused with MLflow's error body (``error_code``, ``message``)."""

    def __init__(self, message: str, status: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message, status)
        self.error_code = error_code


def error_body(exc: InputError) -> dict[str, str]:
    """MLflow's JSON error body for ``exc``."""
    code = getattr(exc, "error_code", None) or (
        "RESOURCE_LIMIT_EXCEEDED" if exc.status == 413 else "BAD_REQUEST"
    )
    return {"error_code": code, "message": str(exc)}


def records_from_invocation(
    body: bytes, content_type: str | None, schema: InputSchema
) -> list[Mapping[str, Any]]:
    """The records of an ``/invocations`` request, or a ``ProtocolError`` saying what to send."""
    mime, params = _content_type(content_type)
    if mime == CONTENT_TYPE_CSV:
        records = _csv_records(body, schema)
    elif mime == CONTENT_TYPE_JSON:
        records = _json_records(body, schema)
    else:
        raise ProtocolError(
            f"This predictor only supports the following content types: "
            f"['{CONTENT_TYPE_CSV}', '{CONTENT_TYPE_JSON}']. Got {quote(content_type)}.",
            415,
        )
    if not records:
        raise ProtocolError("the request holds no records; send at least one row")
    if len(records) > MAX_RECORDS:
        raise ProtocolError(
            f"{len(records)} records in one request; send at most {MAX_RECORDS} per request",
            413,
            "RESOURCE_LIMIT_EXCEEDED",
        )
    return records


def _content_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in (content_type or "").split(";")]
    params = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in parts[1:])}
    charset = params.get("charset", "utf-8").lower()
    if charset != "utf-8":
        raise ProtocolError("The scoring server only supports UTF-8", 415)
    unexpected = set(params) - {"charset"}
    if unexpected:
        raise ProtocolError(
            f"Unrecognized content type parameters: {', '.join(sorted(unexpected))}", 415
        )
    return parts[0].lower(), params


def _json_records(body: bytes, schema: InputSchema) -> list[Mapping[str, Any]]:
    try:
        payload = parse_json(body)
    except ValueError as exc:  # UnicodeDecodeError and too deep included
        raise ProtocolError(
            f"Ensure that input is a valid JSON formatted string. Error: {quote(str(exc))}"
        ) from None
    if isinstance(payload, list):
        raise ProtocolError(f"{REQUIRED_INPUT_FORMAT}. Received a list{_example(schema)}")
    if not isinstance(payload, dict):
        raise ProtocolError(
            f"{REQUIRED_INPUT_FORMAT}. Received {type(payload).__name__}{_example(schema)}"
        )
    keys = [k for k in SUPPORTED_FORMATS if k in payload]
    if len(keys) != 1:
        shown = [quote(k) for k in list(payload)[:10]]
        raise ProtocolError(
            f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {shown}"
            + _example(schema)
        )
    key = keys[0]
    data = payload[key]
    if key == DF_SPLIT:
        return _split_records(data)
    if key == DF_RECORDS:
        if not isinstance(data, list):
            raise ProtocolError(
                "Dataframe records format must be a list of records. Got "
                + ("dictionary" if isinstance(data, dict) else type(data).__name__)
            )
        return data
    # instances / inputs (TF serving): a list of records, or columns of equal length
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return _columns_records(key, data)
    raise ProtocolError(
        f"'{key}' must be a list of records or an object of column: list of values, "
        f"got {type(data).__name__}"
    )


def _split_records(data: Any) -> list[Mapping[str, Any]]:
    if not isinstance(data, dict):
        raise ProtocolError(
            "Dataframe split format must be a dictionary. Got "
            + ("list" if isinstance(data, list) else type(data).__name__)
        )
    extra = set(data) - {"columns", "data", "index"}
    if "data" not in data or extra:
        raise ProtocolError(
            "Dataframe split format must have 'data' field and optionally 'columns' and "
            f"'index' fields. Got {sorted(quote(k) for k in list(data)[:10])}"
        )
    columns, rows = data.get("columns"), data["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ProtocolError(
            "dataframe_split.columns must be the list of column names the model takes"
        )
    if not isinstance(rows, list):
        raise ProtocolError(
            f"dataframe_split.data must be a list of rows, got {type(rows).__name__}"
        )
    records: list[Mapping[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise ProtocolError(
                f"dataframe_split.data[{i}] must be a list of {len(columns)} values "
                f"(one per column), got {quote(row)}"
            )
        records.append(dict(zip(columns, row, strict=True)))
    return records


def _columns_records(key: str, data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    lengths = {name: len(col) if isinstance(col, list) else -1 for name, col in data.items()}
    if any(n < 0 for n in lengths.values()) or len(set(lengths.values())) > 1:
        raise ProtocolError(
            f"'{key}' as an object must map each column to a list of values of one length; "
            f"got lengths {dict(list(lengths.items())[:10])} (-1: not a list)"
        )
    n = next(iter(lengths.values()), 0)
    return [{name: col[i] for name, col in data.items()} for i in range(n)]


def _csv_records(body: bytes, schema: InputSchema) -> list[Mapping[str, Any]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"Ensure that input is a valid UTF-8 encoded string. Error: {exc}"
        ) from None
    reader = csv.reader(io.StringIO(text))
    try:
        return _csv_rows(reader, schema)
    except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte, a bad quote
        raise ProtocolError(
            f"CSV input could not be parsed at line {reader.line_num}: {exc}; send "
            f"what DataFrame.to_csv(index=False) writes, each field under "
            f"{csv.field_size_limit()} characters"
        ) from None


def _csv_rows(reader: Any, schema: InputSchema) -> list[Mapping[str, Any]]:
    """The records of a CSV body's rows (``reader`` is a ``csv.reader``)."""
    header = next(reader, None)
    if not header:
        raise ProtocolError(
            "CSV input needs a header line with the column names "
            "(what DataFrame.to_csv(index=False) writes)"
        )
    records: list[Mapping[str, Any]] = []
    for i, row in enumerate(reader):
        if not row:
            continue
        if len(row) != len(header):
            raise ProtocolError(f"CSV row {i + 1} has {len(row)} values for {len(header)} columns")
        records.append(
            {
                name: _csv_value(schema, name, value, i)
                for name, value in zip(header, row, strict=True)
            }
        )
    return records


def _csv_value(schema: InputSchema, name: str, value: str, i: int) -> Any:
    """A CSV cell converted to the JSON value ``/predict`` would get (validated later); a
    cell it cannot read as its column's type stays text, which the model's spec mapping
    reads as the source would hold it (``"Yes"``, ``" 12.5"``) or the check refuses."""
    column = schema.by_name.get(name)
    if value == "":
        return None
    if column is None or column.kind in ("str", "datetime"):
        return value
    if column.kind in ("int", "float"):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if column.kind == "int" and number.is_integer() else number
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return value


def mlflow_version_text() -> str:
    """The installed MLflow's version, what ``mlflow models serve`` answers on /version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:
        return "unknown"
