"""Records as the source holds them, mapped onto the model's own spec before the schema check.

The snapshot step maps a source's table onto its spec (``core.mapping.apply_mapping``):
source column names become feature names, value maps translate labels
(``"Month-to-month"`` -> ``monthly``), text becomes numbers, booleans and dates, blank
text becomes null. ``RecordMapper`` does the same to a request's records, with the spec the
served model was logged with (so a rollback reverts the mapping with the model), before
``InputSchema.check``; a canonical record (feature names, JSON-typed values) passes through
unchanged.

Names, per record: a record is *raw* when one of its keys is a source column name that is
not itself a feature name (nor the entity id column); every key of a raw record that is a
source name is read as the column it feeds. A name that is both a source name and another
column's feature name is read as the feature in a canonical record and as the source in a
raw one. Two keys landing on one column is a 422 naming both.

Values, per cell, in every record: a value already in its column's JSON form is kept (a
number for a numeric feature, ``true``/``false`` for a boolean, a string for a categorical,
an ISO date string for a date); anything else goes through the spec's value map and the
snapshot's typing (``core.mapping.map_values_and_types``): a key of the feature's value map,
text in a numeric, boolean or date column, blank text, a number in a boolean or categorical
column. A cell the typing cannot read is left as it came, so ``InputSchema.check`` refuses
it with its usual message naming the record, the field and the value.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from churn_platform.core.mapping import (
    NULL_TOKENS,
    ColumnMapping,
    apply_mapping,
    map_values_and_types,
)
from churn_platform.core.spec import Spec
from churn_platform.serving.model_server.schema import InputError, InputSchema

#: Most mapped cells a ``RecordMapper`` remembers (then it starts afresh).
MEMO_CELLS = 100_000
_FLOAT_MAX = sys.float_info.max
_UNSEEN = object()
_UNREADABLE = object()


def raw_column_names(spec: Spec) -> list[str]:
    """The source column names of ``spec``'s features and entity id that are no column's
    own name: a record (or frame) holding one is in the source's form."""
    columns = (spec.id_column, *spec.features)
    sources = [spec.source_of(c) for c in columns]
    return [
        s for s, c in zip(sources, columns, strict=True) if s != c and s not in spec.all_columns
    ]


def canonical_frame(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """A frame of rows as the source holds them, or canonical ones, in ``spec``'s column
    names and dtypes (the model's pyfunc maps what it is given with this).

    A frame holding a ``raw_column_names`` column is mapped as the snapshot step maps a
    table (``apply_mapping``: names, value maps, typing); otherwise its spec columns keep
    their names and only go through the value maps and typing. Columns the spec does not
    name are kept as they are.
    """
    if any(str(c) in set(raw_column_names(spec)) for c in frame.columns):
        keep = ColumnMapping(keep_extra_columns=True, spec=spec)
        return apply_mapping(frame, keep, required=(), spec=spec).frame
    ours = [c for c in frame.columns if c in spec.all_columns]
    typed = map_values_and_types(frame[ours].reset_index(drop=True), spec).frame
    rest = frame.drop(columns=ours).reset_index(drop=True)
    return pd.concat([typed, rest], axis=1)


def _is_iso_date(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _needs_mapping(kind: str, value: Any, map_keys: frozenset[str]) -> bool:
    """Whether ``value`` of a column of ``kind`` is not in its JSON form (see module doc)."""
    if value is None:
        return False
    if isinstance(value, str):
        if value in map_keys or kind in ("int", "float", "bool"):
            return True
        if not value.strip():
            return True
        return kind == "datetime" and not _is_iso_date(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return kind in ("bool", "str") or str(value) in map_keys
    return False


_NONE = type(None)
_JSON_TYPES: dict[str, frozenset[type]] = {
    "int": frozenset({int, float, bool, _NONE}),
    "float": frozenset({int, float, bool, _NONE}),
    "bool": frozenset({bool, _NONE}),
    "str": frozenset({str, _NONE}),
    "datetime": frozenset({str, _NONE}),
}


def _in_json_form(kind: str, col: list[Any], map_keys: frozenset[str]) -> bool:
    """Whether no value of ``col`` (a column of ``kind``, None where absent) needs mapping:
    ``_needs_mapping`` of each is False. True only on the common cases; False means
    look value by value."""
    types = set(map(type, col))
    if not types <= _JSON_TYPES[kind]:
        return False
    if kind in ("int", "float"):
        return not map_keys or types <= {bool, _NONE}
    if kind == "bool":
        return True
    texts = [v for v in col if v is not None] if _NONE in types else col
    if not map_keys.isdisjoint(texts) or not all(map(str.strip, texts)):
        return False
    return kind == "str" or all(map(_is_iso_date, texts))


def _json_value(value: Any) -> Any:
    """A typed cell as the JSON value ``InputSchema.check`` takes (None for a null)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "item"):  # numpy scalar -> Python
        return value.item()
    return value


class RecordMapper:
    """Maps raw records onto the columns of ``schema`` with ``spec``'s own mapping."""

    def __init__(self, schema: InputSchema, spec: Spec) -> None:
        self.spec = spec
        self.mapping = ColumnMapping(spec=spec).over(spec)
        columns = [c for c in spec.all_columns if c in schema.by_name or c == spec.id_column]
        self.kinds = {c.name: c.kind for c in schema.columns if c.name in spec.all_columns}
        self.sources = {spec.source_of(c): c for c in columns if spec.source_of(c) != c}
        # a source name that is no column's name marks a record as raw
        self.raw_names = frozenset(raw_column_names(spec))
        self._memo: dict[tuple[str, type, Any], Any] = {}
        self.map_keys = {
            c: frozenset(str(k) for k in self.mapping.values.get(c, {})) for c in self.kinds
        }

    @classmethod
    def for_schema(cls, schema: InputSchema) -> RecordMapper | None:
        """The mapper of a loaded model's schema: its spec's (or, for a model logged
        before specs, the spec it was trained on); None for a schema with neither."""
        spec = schema.spec or schema.ranges
        return cls(schema, spec) if spec is not None else None

    def canonical(self, records: Sequence[Any]) -> list[Any]:
        """``records`` in feature names and JSON-typed values (see the module doc); a
        canonical record comes back as the same object."""
        raw = self.raw_names
        renamed = [
            r if not isinstance(r, dict) or raw.isdisjoint(r) else self._renamed(r, i)
            for i, r in enumerate(records)
        ]
        rows = [i for i, r in enumerate(renamed) if isinstance(r, dict)]
        dicts = [renamed[i] for i in rows]
        cells: dict[str, dict[int, Any]] = {}
        for name, kind in self.kinds.items():  # column by column: most columns need nothing
            keys = self.map_keys[name]
            col = [r.get(name) for r in dicts]  # None where absent: needs no mapping either
            if _in_json_form(kind, col, keys):
                continue
            for i, value in zip(rows, col, strict=True):
                if _needs_mapping(kind, value, keys):
                    cells.setdefault(name, {})[i] = value
        return self._converted(renamed, cells) if cells else renamed

    def _renamed(self, record: dict[str, Any], i: int) -> dict[str, Any]:
        """A raw record's keys read as the columns they feed (a canonical record as is)."""
        if not any(k in self.raw_names for k in record):
            return record
        out: dict[str, Any] = {}
        sent: dict[str, str] = {}
        for key, value in record.items():
            name = self.sources.get(key, key)
            if name in out:
                raise InputError(
                    f"records[{i}] has both {sent[name]!r} and {key!r}, which both feed "
                    f"{name!r} (spec {self.spec.name!r}: {self.spec.source_of(name)!r} is its "
                    "source column); send one of them"
                )
            out[name] = value
            sent[name] = key
        return out

    def _converted(self, records: list[Any], cells: Mapping[str, Mapping[int, Any]]) -> list[Any]:
        """``records`` with ``cells`` (column -> record index -> raw value) mapped and typed;
        a cell the typing could not read keeps its raw value (the schema check refuses it).

        A cell's mapping depends on its column and value only, so results are remembered
        (``MEMO_CELLS`` of them): a source's labels, flags and small numbers repeat, and a
        request whose cells were all seen before costs no pandas call.
        """
        out = [dict(r) if isinstance(r, dict) else r for r in records]
        unseen: dict[str, dict[int, Any]] = {}
        for name, by_row in cells.items():
            for i, raw in by_row.items():
                if isinstance(raw, int) and abs(raw) > _FLOAT_MAX:
                    continue  # no reading of it exists (pandas would overflow): the check names it
                found = self._memo.get((name, type(raw), raw), _UNSEEN)
                if found is _UNSEEN:
                    unseen.setdefault(name, {})[i] = raw
                elif found is not _UNREADABLE:
                    out[i][name] = found
        if unseen:
            self._map_unseen(out, unseen)
        return out

    def _map_unseen(self, out: list[Any], cells: Mapping[str, Mapping[int, Any]]) -> None:
        """Map ``cells`` through ``core.mapping`` into ``out`` and remember each result."""
        rows = sorted({i for by_row in cells.values() for i in by_row})
        position = {i: p for p, i in enumerate(rows)}
        frame = pd.DataFrame(
            {
                name: pd.Series([by_row.get(i) for i in rows], index=range(len(rows)), dtype=object)
                for name, by_row in cells.items()
            }
        )
        typed = map_values_and_types(frame, self.spec, self.mapping).frame
        if len(self._memo) > MEMO_CELLS:
            self._memo.clear()
        for name, by_row in cells.items():
            column = typed[name].astype(object).to_numpy()
            keys = self.map_keys[name]
            for i, raw in by_row.items():
                value = _json_value(column[position[i]])
                blank = str(raw).strip().lower() in NULL_TOKENS
                if value is None and not blank and str(raw) not in keys:
                    value = _UNREADABLE  # leave the raw value for the schema check to name
                else:
                    out[i][name] = value
                self._memo[(name, type(raw), raw)] = value
