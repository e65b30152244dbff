"""``data_version``: a content hash of a frame that is the same in every process and run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow

from churn_platform.core.mapping import MappedFrame


def data_version(frame: pd.DataFrame | MappedFrame) -> str:
    """Content hash (sha256 hex) of the rows in order, the column names and dtypes.

    Each column is hashed through its bytes, never through Python objects: numbers, dates
    and booleans as their fixed-width values, nullable columns as values plus null mask,
    text as Arrow's UTF-8 buffers. The bytes are the same in every process and on every
    run; one changed value, a renamed column or a changed dtype gives a new version.
    """
    if isinstance(frame, MappedFrame):
        frame = frame.frame
    digest = hashlib.sha256()
    header = [[str(c), str(t)] for c, t in frame.dtypes.items()]
    digest.update(json.dumps(header).encode())
    digest.update(str(len(frame)).encode())
    for i in range(frame.shape[1]):
        for part in _column_bytes(frame.iloc[:, i]):
            # length-prefixed, so bytes cannot slide from one part or column to the next
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()


def _column_bytes(series: pd.Series) -> list[Any]:
    """Byte buffers that stand for the column's values and nulls (no copy where the values
    already sit in one fixed-width array)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        return [_raw(series.to_numpy())]
    if isinstance(dtype, pd.DatetimeTZDtype):
        return [_raw(series.array.asi8)]
    nulls = _raw(series.isna().to_numpy(dtype=bool))
    numpy_dtype = getattr(dtype, "numpy_dtype", None)  # the nullable Int64 / Float64 / boolean
    if isinstance(numpy_dtype, np.dtype) and numpy_dtype.kind in "biuf":
        return [nulls, _raw(series.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0)))]
    if isinstance(dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy(dtype=np.int64)
        return [_raw(codes), *_column_bytes(pd.Series(dtype.categories))]
    # Arrow-backed text converts as is; Python strings convert fastest from their object array
    arrow_backed = str(getattr(dtype, "storage", "")).startswith("pyarrow")
    source = series if arrow_backed else series.to_numpy(dtype=object)
    try:  # text: Arrow's offsets and UTF-8 bytes; a null is an empty slot plus the mask
        text = pyarrow.array(source, type=pyarrow.large_string(), from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, pyarrow.ArrowNotImplementedError):
        # mixed objects (numbers among strings, ...): pandas' keyed hash, also stable
        hashes = pd.util.hash_pandas_object(series, index=False, categorize=False)
        return [nulls, _raw(hashes.to_numpy(dtype=np.uint64))]
    _, offset_buffer, data = text.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[
        text.offset : text.offset + len(text) + 1
    ]
    first, last = int(offsets[0]), int(offsets[-1])
    body = np.frombuffer(data, dtype=np.uint8)[first:last] if data is not None else _raw([])
    return [nulls, _raw(offsets - first), body]


def _raw(values: Any) -> np.ndarray:
    """The values' bytes as one contiguous uint8 array (a view when already contiguous)."""
    array = np.ascontiguousarray(values)
    if array.dtype.kind in "mM":
        array = array.view(np.int64)
    return array.reshape(-1).view(np.uint8)
