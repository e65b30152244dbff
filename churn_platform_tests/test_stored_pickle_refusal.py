"""A pickle planted as a stored value's pointer is reported as refused, not as a
``UnicodeDecodeError`` (issue #27, point 8)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from churn_platform.resources.io_manager import POINTER, StoredValueError, read_value


def test_a_planted_pickle_pointer_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "staging_deployment"
    folder.mkdir()
    (folder / POINTER).write_bytes(pickle.dumps({"x": 1}, protocol=5))
    with pytest.raises(StoredValueError, match="never loaded") as refused:
        read_value(folder, "staging_deployment")
    assert "UnicodeDecodeError" not in repr(refused.value)
