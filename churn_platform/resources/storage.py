"""Where the platform's files go (snapshots, quality reports): one resource with a base folder.

Assets write through ``StorageResource`` instead of opening paths under ``CHURN_HOME``, so the
place can change (an object store on a cluster, a temp folder in a test) without touching
them; ``CHURN_STORAGE_URL`` moves it to an object store. Every write is atomic: locally the
bytes go to a temporary file beside the target, which is then renamed over it; on an object
store each object is one PUT. A killed write never leaves a half file that a reader takes as
whole.

Files and folders created locally are their owner's only (0600, 0700): snapshots and asset
values hold customer rows.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import dagster as dg
import pandas as pd

from churn_platform.resources.s3_credentials import S3Credentials, open_location, path_is_remote

PRIVATE_DIR = 0o700  # folders the platform creates for customer rows
PRIVATE_FILE = 0o600  # files holding customer rows (tempfile.mkstemp creates them so too)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents readable by their owner only (0700); folders
    that exist already keep their mode."""
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # a concurrent writer made it first
            continue
        folder.chmod(PRIVATE_DIR)  # mkdir's mode is masked by the umask; 0700 is meant


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) through a temporary file in the same folder and a
    rename; missing folders are created 0700."""
    make_private_dirs(path.parent)
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


def atomic_copy_file(source: Path, path: Path) -> None:
    """Copy the file ``source`` to ``path`` (0600) as ``atomic_write_bytes`` writes bytes, in
    chunks (the file is never whole in memory)."""
    make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f, source.open("rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
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

    ``base_url`` is a folder path, a ``file://`` URL or ``s3://<bucket>/<prefix>``
    (``PlatformConfig.storage_url``: ``CHURN_STORAGE_URL``, default ``$CHURN_HOME``). ``s3`` holds the S3 credentials (see
    ``object_store.S3Credentials.from_env``). A local write goes through a temporary file and
    a rename; an object store write is one PUT, which is atomic per object.
    """

    base_url: str
    s3: S3Credentials = S3Credentials()

    def root(self) -> Path:
        """The base location in effect (a ``UPath`` on an object store)."""
        try:
            root = open_location(self.base_url, self.s3.storage_options())
        except ValueError as exc:
            raise ValueError(f"StorageResource.base_url: {exc}") from None
        if not path_is_remote(root):
            make_private_dirs(root)
        return root

    def path(self, key: str) -> Path:
        """The path a key maps to."""
        return self.root() / str(check_key(key))

    def write_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically; return where it went (a path or URL)."""
        target = self.path(key)
        if path_is_remote(target):
            target.write_bytes(data)
        else:
            atomic_write_bytes(target, data)
        return str(target)

    def write_file(self, key: str, source: Path) -> str:
        """Store the local file ``source`` under ``key`` (atomically, streamed in chunks);
        return where it went."""
        target = self.path(key)
        if path_is_remote(target):
            with source.open("rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            atomic_copy_file(source, target)
        return str(target)

    def staging_folder(self) -> Path:
        """A new local folder (0700) for files made before they are stored: under the base
        folder's ``.staging/`` when it is local, in the system's temporary folder for an
        object store. The caller removes it."""
        root = self.root()
        parent = None if path_is_remote(root) else root / ".staging"
        if parent is not None:
            make_private_dirs(parent)
        return Path(tempfile.mkdtemp(prefix="staging-", dir=parent))

    def read_bytes(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        return self.path(key).read_bytes()

    def write_text(self, key: str, text: str) -> str:
        """Store UTF-8 ``text`` under ``key``; return where it went."""
        return self.write_bytes(key, text.encode("utf-8"))

    def write_frame(self, key: str, frame: pd.DataFrame, index: bool | None = None) -> str:
        """Store ``frame`` as Parquet under ``key``; return where it went."""
        return self.write_bytes(key, frame_to_parquet_bytes(frame, index=index))
