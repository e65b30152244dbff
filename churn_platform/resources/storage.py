"""Where the platform's files go (snapshots, quality reports): one resource with a base folder.

Assets write through ``StorageResource`` instead of opening paths under ``CHURN_HOME``, so the
place can change (an object store on a cluster, a temp folder in a test) without touching
them. Every write is atomic: the bytes go to a temporary file beside the target, which is then
renamed over it, so a killed write never leaves a half file that a reader takes as whole.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd

from churn_platform import settings


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def frame_to_parquet_bytes(frame: pd.DataFrame, index: bool | None = None) -> bytes:
    """A frame as Parquet bytes (by default its index is kept when it is not a plain range)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=index)
    return buffer.getvalue()


def check_key(key: str) -> PurePosixPath:
    """A storage key as a relative path, refusing anything that could leave the base folder."""
    rel = PurePosixPath(key)
    if not key or rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts):
        raise ValueError(
            f"storage key {key!r} must be a relative path such as 'snapshots/x.parquet' "
            "(no leading '/', no '..')"
        )
    return rel


class StorageResource(dg.ConfigurableResource):
    """Files under one base location, addressed by relative keys (``snapshots/<name>.parquet``).

    ``base_url`` is a folder path or a ``file://`` URL; empty means ``$CHURN_HOME``. Only the
    local filesystem is implemented; an object store (``s3://...``) would be another scheme
    here, and the assets would not change.
    """

    base_url: str = ""

    def root(self) -> Path:
        """The base folder in effect."""
        if not self.base_url:
            return settings.churn_home()
        parts = urlsplit(self.base_url)
        if parts.scheme == "file":
            return Path(parts.path)
        if parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive
            raise ValueError(
                f"StorageResource.base_url={self.base_url!r}: only folders and file:// URLs "
                "are supported; give a folder path"
            )
        return Path(self.base_url).expanduser().resolve()

    def path(self, key: str) -> Path:
        """The local path a key maps to."""
        return self.root() / check_key(key)

    def write_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically; return where it went (a path)."""
        target = self.path(key)
        atomic_write_bytes(target, data)
        return str(target)

    def write_text(self, key: str, text: str) -> str:
        """Store UTF-8 ``text`` under ``key``; return where it went."""
        return self.write_bytes(key, text.encode("utf-8"))

    def write_frame(self, key: str, frame: pd.DataFrame, index: bool | None = None) -> str:
        """Store ``frame`` as Parquet under ``key``; return where it went."""
        return self.write_bytes(key, frame_to_parquet_bytes(frame, index=index))
