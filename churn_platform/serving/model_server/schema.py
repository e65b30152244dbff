"""The request schema: which fields a model takes, checked record by record.

``InputSchema`` turns JSON records into the DataFrame the model was trained on, built from
the spec the model was logged with (or, for a model logged before specs, its MLflow
signature). Anything the model cannot take is an ``InputError`` (a 4xx) whose message
names the record, the field, a short prefix of the value and what to send.

Lenient where MLflow is (the spec's ``serving`` rules, ``core.serving_rules``): by default
a categorical value outside ``allowed`` is scored (the model's encoders treat it as
unknown) and a field the spec does not declare is dropped; ``admit`` reports both per
field and per record so the server counts and logs them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from churn_platform.core.serving_rules import DEFAULT_SERVING_RULES
from churn_platform.core.spec import Spec
from churn_platform.serving.model_server.leniency import MAX_IGNORED_NAMES, field_label
from churn_platform.serving.model_server.plain_columns import plain_column, unseen_rows
from churn_platform.serving.request_ids import entity_id_value

MAX_RECORDS = 10_000

# MLflow signature types -> (kind used for validation, pandas dtype)
_SIGNATURE_KINDS: dict[str, tuple[str, str]] = {
    "long": ("int", "Int64"),
    "integer": ("int", "Int64"),
    "double": ("float", "float64"),
    "float": ("float", "float64"),
    "string": ("str", "string"),
    "boolean": ("bool", "boolean"),
    "datetime": ("datetime", "datetime64[ns]"),
}
_DTYPE_KINDS: dict[str, str] = {
    "Int64": "int",
    "float64": "float",
    "string": "str",
    "boolean": "bool",
    "datetime64[ns]": "datetime",
}
_KIND_HINTS: dict[str, str] = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "datetime": "an ISO date string such as '2025-03-01'",
}


class InputError(ValueError):
    """A request the caller must fix; carries the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Column:
    """One input field the model takes."""

    name: str
    kind: str  # int | float | str | bool | datetime
    dtype: str  # pandas dtype of the column handed to the model
    categories: tuple[str, ...] = ()

    def describe(self) -> str:
        """'region (a string, one of north, south, east, west)'."""
        hint = _KIND_HINTS[self.kind]
        if self.categories:
            hint += ", one of " + ", ".join(self.categories)
        return f"{self.name} ({hint})"


@dataclass
class Checked:
    """Records admitted by ``InputSchema.admit``: the ``records`` without undeclared fields,
    their checked ``values`` column by column, and what leniency let through: ``unseen``
    (field -> values outside its ``allowed`` list, scored), ``ignored`` (undeclared field
    -> records that carried it) and ``notes`` (per record, the fields of each kind; what
    the inference log adds to the record's line, empty when the record had neither)."""

    records: list[Mapping[str, Any]]
    values: dict[str, list[Any]]
    unseen: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    notes: list[dict[str, list[str]]] = field(default_factory=list)


class InputSchema:
    """Checks JSON records and turns them into the DataFrame the model was trained on.

    ``spec`` is the table spec the columns came from (None when built from a signature
    or by hand); the server reports its hash on ``/health``. ``ranges`` is the spec whose
    feature ranges the served values are counted against (default ``spec``; for a model
    logged before specs, the spec it was trained on). That spec's entity id column
    (``entity_column``) is accepted in a record beside the model's inputs, never as one:
    ``split_entity_ids`` takes it out before ``check``.
    """

    def __init__(
        self, columns: Sequence[Column], spec: Spec | None = None, ranges: Spec | None = None
    ) -> None:
        if not columns:
            raise ValueError("InputSchema needs at least one column")
        self.columns = tuple(columns)
        self.by_name = {c.name: c for c in self.columns}
        self.spec = spec
        self.ranges = ranges or spec
        source = self.ranges
        self.rules = source.serving if source is not None else DEFAULT_SERVING_RULES
        # a model input of the same name (an old signature's) stays an input, not an id
        self.entity_column = (
            source.id_column
            if source is not None and source.id_column not in self.by_name
            else None
        )
        self._expected = ", ".join(c.describe() for c in self.columns)
        if self.entity_column:
            self._expected += f", and optionally the entity id {self.entity_column}"

    @classmethod
    def from_spec(cls, spec: Spec) -> InputSchema:
        """A spec's model inputs (``spec.feature_names``, in order) with its validated dtypes;
        a categorical feature knows its ``allowed`` values (others are counted, or refused
        under the spec's ``serving.unseen_categories: refuse``)."""
        dtypes = spec.dtypes
        return cls(
            [
                Column(
                    name,
                    _DTYPE_KINDS[dtypes[name]],
                    dtypes[name],
                    tuple(feature.allowed or ()) if feature.kind == "categorical" else (),
                )
                for name, feature in spec.features.items()
            ],
            spec,
        )

    def in_model_order(self, pipeline: Any) -> InputSchema:
        """This schema with its columns in the order ``pipeline`` was fitted on.

        scikit-learn refuses a frame whose columns come in another order than at fit time,
        and a spec read back from MLmodel metadata has its features sorted by name (MLflow
        writes the YAML with sorted keys), so the fitted pipeline's ``feature_names_in_``
        decides the order (columns it was not fitted on, which a column transformer
        ignores, follow). A pipeline fitted on a column the schema lacks cannot score any
        request: that is an error naming it, raised when the model loads.
        """
        fitted = getattr(pipeline, "feature_names_in_", None)
        if fitted is None:
            return self
        names = [str(n) for n in fitted]
        lacking = [n for n in names if n not in self.by_name]
        if lacking:
            source = f"spec {self.spec.name!r} ({self.spec.short_hash})" if self.spec else "schema"
            raise ValueError(
                f"the model was fitted on column(s) {lacking} that its {source} does not "
                f"declare (it declares {list(self.by_name)}); log the model with the spec "
                "it was trained on"
            )
        order = names + [c.name for c in self.columns if c.name not in set(names)]
        if order == [c.name for c in self.columns]:
            return self
        return InputSchema([self.by_name[n] for n in order], self.spec, self.ranges)

    def example_field(self) -> tuple[str, str]:
        """(a real column, a JSON value it takes): what error messages show as an example."""
        column = next((c for c in self.columns if c.kind in ("int", "float")), self.columns[0])
        value = {"int": "3", "float": "3.5", "bool": "true", "str": '"..."'}.get(
            column.kind, '"2025-03-01"'
        )
        if column.categories:
            value = json.dumps(column.categories[0])
        return column.name, value

    def example(self) -> str:
        """A request body naming a real column, e.g. ``{"records": [{"tenure_months": 3, ...}]}``."""
        name, value = self.example_field()
        return f'{{"records": [{{"{name}": {value}, ...}}]}}'

    @classmethod
    def from_signature(cls, signature: Any, spec: Spec) -> InputSchema:
        """From an MLflow ``ModelSignature`` with column-based inputs (else ``spec``'s inputs).

        For models logged before specs, with ``spec`` the spec they were trained on (the
        shipped one, ``spec_of_model_metadata``). Columns of ``spec`` keep its dtype and
        allowed values (what training saw); other columns get the dtype matching their
        MLflow type.
        """
        inputs = getattr(signature, "inputs", None)
        specs = getattr(inputs, "inputs", None) if inputs is not None else None
        if not specs or not all(getattr(column, "name", None) for column in specs):
            return cls.from_spec(spec)
        known = cls.from_spec(spec).by_name
        columns = []
        for column in specs:
            type_name = getattr(column.type, "name", str(column.type))
            if column.name in known:
                columns.append(known[column.name])
                continue
            if type_name not in _SIGNATURE_KINDS:
                raise ValueError(
                    f"model signature column {column.name!r} has type {type_name!r}, which the "
                    f"model server cannot take from JSON; use one of {sorted(_SIGNATURE_KINDS)}"
                )
            kind, dtype = _SIGNATURE_KINDS[type_name]
            columns.append(Column(column.name, kind, dtype))
        return cls(columns, ranges=spec)

    def records_from_payload(self, payload: Any) -> list[Mapping[str, Any]]:
        """The list of records in a parsed JSON body, or an ``InputError`` saying what to send."""
        if isinstance(payload, list):
            records = payload
        elif isinstance(payload, dict):
            keys = [k for k in ("records", "dataframe_records") if k in payload]
            extra = sorted(set(payload) - {"records", "dataframe_records"})
            if len(keys) != 1 or extra:
                raise InputError(
                    f"body has fields {sorted(payload)}; send one field 'records' holding a "
                    f"list of objects, e.g. {self.example()}",
                    400,
                )
            records = payload[keys[0]]
            if not isinstance(records, list):
                raise InputError(
                    f"'{keys[0]}' must be a list of objects, got {type(records).__name__}"
                )
        else:
            raise InputError(
                f"body must be a JSON object or list, got {type(payload).__name__}; "
                'send {"records": [{...}, ...]}',
                400,
            )
        if not records:
            raise InputError(
                "records is empty; send at least one record with the fields " + self._expected
            )
        if len(records) > MAX_RECORDS:
            raise InputError(
                f"{len(records)} records in one request; send at most {MAX_RECORDS} per request",
                413,
            )
        return records

    def split_entity_ids(self, records: Sequence[Any]) -> tuple[list[Any], list[str | None]]:
        """``records`` without the entity id field, and each record's entity id (a string,
        or None where it has none); an id that is not a string or whole number is an
        ``InputError`` naming the record and field. A record that is not an object is
        passed on unchanged (``check`` refuses it)."""
        column = self.entity_column
        if column is None:
            return list(records), [None] * len(records)
        stripped: list[Any] = []
        ids: list[str | None] = []
        for i, record in enumerate(records):
            if not isinstance(record, dict) or column not in record:
                stripped.append(record)
                ids.append(None)
                continue
            try:
                ids.append(entity_id_value(record[column], f"records[{i}].{column}"))
            except ValueError as exc:
                raise InputError(str(exc)) from None
            stripped.append({k: v for k, v in record.items() if k != column})
        return stripped, ids

    def check(self, records: Sequence[Any]) -> dict[str, list[Any]]:
        """Validate ``records``; return their values column by column (checked, converted)."""
        return self.admit(records).values

    def admit(self, records: Sequence[Any]) -> Checked:
        """Validate ``records`` under the spec's serving rules: undeclared fields dropped
        (or refused), values outside ``allowed`` kept (or refused), each counted.

        A plain request is checked column by column (``plain_columns``); any other is
        checked record by record, which names the first problem."""
        plain = self._admit_plain(records)
        return plain if plain is not None else self._admit_each(records)

    def _admit_plain(self, records: Sequence[Any]) -> Checked | None:
        """``admit`` of records that are all objects with exactly the declared fields and
        values ``check_value`` takes as they are; None for any other request."""
        keys = self.by_name.keys()
        if not all(type(r) is dict and r.keys() == keys for r in records):
            return None
        refuse_unseen = self.rules.refuses_unseen
        checked = Checked(list(records), {}, notes=[{} for _ in records])
        for column in self.columns:
            name = column.name
            col = [r[name] for r in records]
            values = plain_column(
                column.kind,
                column.categories,
                col,
                refuse_unseen,
                MAX_ABS_NUMBER,
                MAX_CATEGORY_CHARS,
            )
            if values is None:
                return None
            checked.values[name] = values
            outside = unseen_rows(col, column.categories) if column.categories else []
            if outside:
                checked.unseen[name] = len(outside)
                for i in outside:
                    checked.notes[i].setdefault("unseen_fields", []).append(name)
        return checked

    def _admit_each(self, records: Sequence[Any]) -> Checked:
        """``admit``, record by record: the first problem raises its ``InputError``."""
        checked = Checked([], {c.name: [] for c in self.columns})
        names, values, notes, kept = self.by_name, checked.values, checked.notes, checked.records
        refuse_unseen = self.rules.refuses_unseen
        categorical = [(c.name, c.categories) for c in self.columns if c.categories]
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(
                    f"records[{i}] must be an object of field: value, got "
                    f"{type(record).__name__}; expected fields: {self._expected}"
                )
            note: dict[str, list[str]] = {}
            if len(record) != len(names) or any(k not in names for k in record):
                record = self._declared(record, i, checked, note)
            for column in self.columns:
                values[column.name].append(
                    check_value(column, record[column.name], i, refuse_unseen)
                )
            for name, allowed in categorical:  # checked strings (or None) by now
                value = record[name]
                if value is not None and value not in allowed:
                    checked.unseen[name] = checked.unseen.get(name, 0) + 1
                    note.setdefault("unseen_fields", []).append(name)
            kept.append(record)
            notes.append(note)
        return checked

    def _declared(
        self, record: dict[str, Any], i: int, checked: Checked, note: dict[str, list[str]]
    ) -> dict[str, Any]:
        """``record`` with its undeclared fields dropped (counted), or the ``InputError``
        for a refused field or a missing one."""
        names = self.by_name
        unknown = [str(k) for k in record if k not in names]
        if unknown and self.rules.refuses_unknown:
            raise InputError(
                f"records[{i}] has unknown field(s) {sorted(unknown)}; send only: "
                f"{self._expected} (the model's spec sets serving.unknown_fields: refuse)"
            )
        if unknown:
            record = {k: v for k, v in record.items() if k in names}
            for name in unknown:
                checked.ignored[name] = checked.ignored.get(name, 0) + 1
            note["ignored_fields"] = [field_label(n) for n in unknown[:MAX_IGNORED_NAMES]]
        missing = [c for c in self.columns if c.name not in record]
        if missing:
            raise InputError(
                f"records[{i}] is missing field(s) " + ", ".join(c.describe() for c in missing)
            )
        return record

    def build(self, values: Mapping[str, list[Any]]) -> pd.DataFrame:
        """The model's input frame (schema order and dtypes) from checked column values."""
        data = {
            column.name: column_array(column.dtype, values[column.name]) for column in self.columns
        }
        return pd.DataFrame(data, copy=False)  # the arrays are this frame's own

    def frame(self, records: Sequence[Any]) -> pd.DataFrame:
        """Validate ``records`` and build the model's input frame."""
        return self.build(self.check(records))


# numbers beyond this are no real tenure, spend or count; left in, they overflow integer
# columns or the features' arithmetic and would turn a client's mistake into a 500
MAX_ABS_NUMBER = 1e12
QUOTE_CHARS = 40
# an unseen category is scored and logged as sent; no real plan or region name is longer
MAX_CATEGORY_CHARS = 256


def column_array(dtype: str, col: list[Any]) -> Any:
    """One column of checked values as the model's frame holds it: what
    ``pd.array(col, dtype=dtype)`` gives (``pd.to_datetime`` for dates), equal value for
    value and mask for mask, built directly (a tenth of the cost on a 1-row request).

    Checked values are Python ints, floats, bools, strings, naive datetimes inside pandas'
    range, or None (a missing value: NaN, NaT or masked)."""
    if dtype == "datetime64[ns]":
        return np.array(col, dtype=dtype)  # None: NaT
    if dtype == "float64":
        return np.array(col, dtype=np.float64)  # None: NaN
    if dtype in ("Int64", "boolean"):
        mask = np.fromiter((v is None for v in col), dtype=bool, count=len(col))
        if mask.any():  # what pandas puts under the mask: 1, False
            fill = 1 if dtype == "Int64" else False
            col = [fill if v is None else v for v in col]
        if dtype == "Int64":
            return pd.arrays.IntegerArray(np.array(col, dtype=np.int64), mask)
        return pd.arrays.BooleanArray(np.array(col, dtype=bool), mask)
    return pd.array(col, dtype=dtype)


def quote(value: Any) -> str:
    """``repr(value)``, cut to a short prefix: an error message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + f"... ({len(text)} chars)"


def check_value(column: Column, value: Any, i: int, refuse_unseen: bool = True) -> Any:
    """One value, checked and converted (None stays None: the pipeline imputes).

    Anything the model cannot take raises ``InputError`` (a 4xx) naming the record, the
    field and a short prefix of the value, never an error deeper down that would be a 500;
    so does a categorical value outside the column's categories when ``refuse_unseen``.
    """
    if value is None:
        return None
    kind = column.kind
    where = f"records[{i}].{column.name}"
    ok = True
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        # an int beyond a float's range gets the range error below (isfinite would overflow)
        too_big = ok and isinstance(value, int) and abs(value) > MAX_ABS_NUMBER
        if ok and not too_big and not math.isfinite(value):
            raise InputError(f"{where} must be finite, got {quote(value)}")
    elif kind == "str":
        ok = isinstance(value, str)
        if ok and column.categories and value not in column.categories:
            if refuse_unseen:
                raise InputError(
                    f"{where} is {quote(value)}; send one of "
                    + ", ".join(column.categories)
                    + " (the model's spec sets serving.unseen_categories: refuse)"
                )
            if len(value) > MAX_CATEGORY_CHARS:  # scored and logged as sent: bounded
                raise InputError(
                    f"{where} is {quote(value)}, longer than any category the model takes "
                    f"({MAX_CATEGORY_CHARS} characters at most); send one of "
                    + ", ".join(column.categories)
                )
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "datetime":
        if not isinstance(value, str):
            ok = False
        else:
            try:
                parsed = dt.datetime.fromisoformat(value)
                if parsed.tzinfo is not None:  # year 1 minus an hour overflows: out of range
                    parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
            except ValueError:
                ok = False
            except OverflowError:
                parsed = dt.datetime.min
            if ok:
                if not pd.Timestamp.min < parsed < pd.Timestamp.max:
                    raise InputError(
                        f"{where} is {quote(value)}, outside the dates the model takes "
                        f"({pd.Timestamp.min.date()} to {pd.Timestamp.max.date()})"
                    )
                value = parsed
    if not ok:
        raise InputError(
            f"{where} must be {_KIND_HINTS[kind]}, got {quote(value)} ({type(value).__name__})"
        )
    if kind in ("int", "float") and abs(value) > MAX_ABS_NUMBER:
        raise InputError(
            f"{where} is {quote(value)}, outside the range the model takes "
            f"(-{MAX_ABS_NUMBER:g} to {MAX_ABS_NUMBER:g})"
        )
    return value
