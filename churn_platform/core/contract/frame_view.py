"""One frame under evaluation: cached per-column arrays and the dtype tests the rules share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


class FrameView:
    """One frame under evaluation, caching per-column arrays shared by several rules."""

    def __init__(
        self,
        frame: pd.DataFrame,
        conversion: Mapping[str, Any] | None = None,
        sample_size: int = 20,
        id_column: str = "customer_id",
        unmapped: Mapping[str, pd.DataFrame] | None = None,
    ) -> None:
        self.frame = frame
        self.n = len(frame)
        self.conversion = conversion
        self.sample_size = sample_size
        self.id_column = id_column
        # raw values a value map did not cover and typing could not keep (MappedFrame)
        self.unmapped = dict(unmapped or {})
        self._floats: dict[str, np.ndarray] = {}
        self._nulls: dict[str, np.ndarray] = {}

    def has(self, column: str) -> bool:
        """Whether ``column`` is in the frame."""
        return column in self.frame.columns

    def floats(self, column: str) -> np.ndarray:
        """The column as float64 with NaN for nulls and non-numeric values (cached)."""
        if column not in self._floats:
            self._floats[column] = as_float(self.frame[column])
        return self._floats[column]

    def nulls(self, column: str) -> np.ndarray:
        """Boolean mask of null cells in ``column`` (cached)."""
        if column not in self._nulls:
            self._nulls[column] = self.frame[column].isna().to_numpy(dtype=bool)
        return self._nulls[column]

    def cases(self, rows: np.ndarray | list[int], column: str | None) -> pd.DataFrame:
        """Failure sample for row positions ``rows``: row, the entity id and ``column``."""
        rows = np.asarray(rows, dtype=np.int64)[: self.sample_size]
        out = pd.DataFrame({"row": rows})
        if self.has(self.id_column):
            out[self.id_column] = self.frame[self.id_column].iloc[rows].to_numpy()
        if column and column != self.id_column and self.has(column):
            out[column] = self.frame[column].iloc[rows].to_numpy()
        return out

    def joined(self, samples: list[pd.DataFrame]) -> pd.DataFrame:
        """Per-column failure samples as one, at most ``sample_size`` rows (none: empty)."""
        if not samples:
            return self.cases([], None)
        return pd.concat(samples, ignore_index=True).head(self.sample_size)


def as_float(series: pd.Series) -> np.ndarray:
    """A column as float64 values; nulls and values that are not numbers become NaN."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        series.dtype
    ):
        return np.full(len(series), np.nan)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def py_value(value: Any) -> Any:
    """A JSON-safe Python value (numpy scalars unwrapped, NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def dtype_compatible(series: pd.Series, expected: str) -> bool:
    """Whether ``series`` has the same kind of dtype as canonical ``expected``."""
    dtype = series.dtype
    api = pd.api.types
    if expected == "string":
        if isinstance(dtype, pd.StringDtype):
            return True
        return dtype == np.dtype(object) and api.infer_dtype(series, skipna=True) in (
            "string",
            "empty",
        )
    if expected == "Int64":
        return api.is_integer_dtype(dtype) and not api.is_bool_dtype(dtype)
    if expected == "float64":
        return (api.is_float_dtype(dtype) or api.is_integer_dtype(dtype)) and not api.is_bool_dtype(
            dtype
        )
    if expected == "boolean":
        return api.is_bool_dtype(dtype)
    if expected.startswith("datetime64"):
        return api.is_datetime64_dtype(dtype) and not isinstance(dtype, pd.DatetimeTZDtype)
    return str(dtype) == expected


def uncoercible(series: pd.Series, expected: str) -> np.ndarray:
    """Mask of non-null cells that cannot be read as ``expected`` (type-rule evidence)."""
    notna = series.notna().to_numpy(dtype=bool)
    if expected in ("Int64", "float64"):
        values = as_float(series)
        bad = np.isnan(values)
        if expected == "Int64":
            with np.errstate(invalid="ignore"):
                bad |= values != np.round(values)
        return notna & bad
    if expected == "boolean":
        values = series.to_numpy(dtype=object)
        return notna & ~np.fromiter(
            (isinstance(v, bool | np.bool_) for v in values), bool, len(values)
        )
    if expected.startswith("datetime64"):
        return notna & pd.to_datetime(series, errors="coerce").isna().to_numpy(dtype=bool)
    if expected == "string":
        values = series.to_numpy(dtype=object)
        return notna & ~np.fromiter((isinstance(v, str) for v in values), bool, len(values))
    return notna
