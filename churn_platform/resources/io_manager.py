"""The IO manager for asset values: data on disk, never pickles.

Dagster's ``FilesystemIOManager`` pickles every value, so whoever can write its folder runs
code in every later run that loads from it. This one stores only data:

- a pandas ``DataFrame`` as Parquet;
- a record of ``RECORDS`` (the step records of ``core.records``, the Spark engine's
  ``SparkDataset`` among them, and ``core.mapping``'s ``MappedFrame``) as JSON naming its type, its DataFrame fields as Parquet files beside it;
- plain JSON values (dicts, lists, strings, numbers, booleans, None).

Reading rebuilds a record only when the name it stores is in ``RECORDS``, an explicit
registry: a name is looked up, never imported, so a planted manifest cannot make a read run
module code. Any other type name, and any file not written by this manager (an old pickle
included), is refused with an error that says what to do. Nothing is ever unpickled.

Locally, the files are their owner's only (0600, folders 0700): values hold customer rows.

Layout per asset (``<base_dir>/<asset key path>/``): each write goes to a fresh ``.tmp-*``
folder, which is renamed to ``v-*`` when complete; then the ``CURRENT`` pointer file is
replaced atomically, and ``runs/<run_id>`` names the version that run wrote. On an object
store (``base_dir`` ``s3://...``) there is no rename: the
version's objects are written under ``v-*/`` (the manifest last), then the ``CURRENT``
object, each one PUT. A reader follows ``CURRENT``, so a write killed half way leaves the
previous value readable and no half file is ever taken as whole.

A run reads what it wrote itself: an input whose asset this run materialised follows
``runs/<run_id>``, not ``CURRENT``, so two runs at once never train or evaluate each other's
values (another run may have moved ``CURRENT`` in between). An input this run did not
materialise follows ``CURRENT``. A version a run pointer names is kept for an hour, so a
run's own value outlives the writes of concurrent runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import time
import uuid
from pathlib import Path, PurePath
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from churn_platform.core import records
from churn_platform.core.mapping import ColumnConversion, MappedFrame
from churn_platform.resources.s3_credentials import (
    S3Credentials,
    open_location,
    path_is_remote,
    remove_tree,
)
from churn_platform.resources.storage import (
    PRIVATE_DIR,
    PRIVATE_FILE,
    atomic_write_bytes,
    frame_to_parquet_bytes,
    make_private_dirs,
)

FORMAT = "churn_platform.io/1"
POINTER = "CURRENT"
MANIFEST = "value.json"
STALE_TMP_SECONDS = 3600
RUNS = "runs"  # runs/<run_id>: the version that run wrote
RUN_POINTER_SECONDS = 7 * 24 * 3600
# tags of the JSON encoding; a plain dict using one of them as a key is stored as pairs
_TAGS = (
    "__frame__",
    "__dataclass__",
    "__tuple__",
    "__pairs__",
    "__datetime__",
    "__date__",
    "__path__",
)


class StoredValueError(ValueError):
    """A value cannot be stored, or a stored value cannot be read; the message says why."""


def _record_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# The records asset values are made of, by the name a manifest stores (``module:qualname``).
# Only these are written and rebuilt: a new record type is added here, beside its test.
RECORDS: dict[str, type] = {
    _record_name(cls): cls
    for cls in (
        records.ChallengerModel,
        records.EvaluationDecision,
        records.StagingResult,
        records.ProductionResult,
        records.SparkDataset,
        MappedFrame,
        ColumnConversion,
    )
}


class _Encoder:
    """Turns a value into JSON, collecting its frames as Parquet files to write beside it."""

    def __init__(self) -> None:
        self.frames: dict[str, bytes] = {}

    def encode(self, value: Any, where: str) -> Any:
        if isinstance(value, np.generic) and isinstance(value, (np.bool_, np.number)):
            return value.item()
        if value is None or isinstance(value, (bool, str, int, float)):
            return value
        if isinstance(value, pd.DataFrame):
            name = f"frame-{len(self.frames)}.parquet"
            try:
                self.frames[name] = frame_to_parquet_bytes(value)
            except Exception as exc:  # pyarrow raises several types for unstorable columns
                raise StoredValueError(
                    f"{where}: the DataFrame cannot be written as Parquet ({exc}); give its "
                    "columns string names and plain types"
                ) from exc
            return {"__frame__": name}
        if isinstance(value, (pd.Timestamp, dt.datetime)):
            return {"__datetime__": value.isoformat()}
        if isinstance(value, dt.date):
            return {"__date__": value.isoformat()}
        if isinstance(value, PurePath):
            return {"__path__": str(value)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            name = _record_name(type(value))
            if RECORDS.get(name) is not type(value):
                raise StoredValueError(
                    f"{where}: {name.replace(':', '.')} is not a record of "
                    "churn_platform.resources.io_manager.RECORDS; only those are stored and "
                    "rebuilt (add the class there, or store plain JSON values)"
                )
            return {
                "__dataclass__": name,
                "fields": {
                    f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}")
                    for f in dataclasses.fields(value)
                },
            }
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not set(value) & set(_TAGS):
                return {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}
            return {
                "__pairs__": [
                    [self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        raise StoredValueError(
            f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored; "
            "asset values must be DataFrames, records of io_manager.RECORDS, or JSON "
            "values (dict, list, str, int, float, bool, None)"
        )


def _registered_record(name: str, where: str, folder: Path) -> type:
    """The record class a manifest names, looked up in ``RECORDS``: nothing is imported."""
    cls = RECORDS.get(name)
    if cls is None:
        raise StoredValueError(
            f"{where}: {folder / MANIFEST} names the type {name!r}, which is not a record "
            "this IO manager writes (churn_platform.resources.io_manager.RECORDS); it is not "
            "loaded. Delete the folder or re-materialise the asset"
        )
    return cls


class _Decoder:
    """Rebuilds a value from its JSON, reading frames from ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def decode(self, data: Any, where: str) -> Any:
        if isinstance(data, list):
            return [self.decode(v, where) for v in data]
        if not isinstance(data, dict):
            return data
        if "__frame__" in data:
            name = str(data["__frame__"])
            if "/" in name or name.startswith("."):
                raise StoredValueError(f"{where}: frame file name {name!r} is not allowed")
            path = self.folder / name
            if path_is_remote(path):
                with path.open("rb") as f:
                    return pd.read_parquet(f)
            return pd.read_parquet(path)
        if "__datetime__" in data:
            return pd.Timestamp(data["__datetime__"]).to_pydatetime()
        if "__date__" in data:
            return dt.date.fromisoformat(data["__date__"])
        if "__path__" in data:
            return Path(data["__path__"])
        if "__tuple__" in data:
            return tuple(self.decode(v, where) for v in data["__tuple__"])
        if "__pairs__" in data:
            return {self.decode(k, where): self.decode(v, where) for k, v in data["__pairs__"]}
        if "__dataclass__" in data:
            cls = _registered_record(str(data["__dataclass__"]), where, self.folder)
            values = {k: self.decode(v, f"{where}.{k}") for k, v in data["fields"].items()}
            declared = {f.name: f.init for f in dataclasses.fields(cls)}
            try:
                unknown = sorted(set(values) - set(declared))
                if unknown:  # a field added since has its default; a removed one cannot go
                    raise TypeError(f"no field(s) {unknown}")
                obj = cls(**{k: v for k, v in values.items() if declared[k]})
            except (TypeError, ValueError) as exc:
                raise StoredValueError(
                    f"{where}: the stored {cls.__qualname__} does not fit the class as it is now "
                    f"({exc}); re-materialise the asset"
                ) from exc
            for k, v in values.items():
                if not declared[k]:  # init=False fields are restored as stored
                    object.__setattr__(obj, k, v)
            return obj
        return {k: self.decode(v, f"{where}[{k!r}]") for k, v in data.items()}


def write_value(folder: Path, value: Any, label: str = "value", run_id: str | None = None) -> Path:
    """Store ``value`` in ``folder`` (one asset's folder); return the version folder written.
    With ``run_id``, ``runs/<run_id>`` names the version too (``read_value(..., run_id)``)."""
    encoder = _Encoder()
    encoded = encoder.encode(value, label)
    manifest = json.dumps({"format": FORMAT, "value": encoded}, allow_nan=True).encode()
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    files = [*encoder.frames.items(), (MANIFEST, manifest)]
    if path_is_remote(folder):
        final = _write_version_objects(folder, f"v-{name}", files)
    else:
        final = _write_version_folder(folder, name, files)
    previous = _current(folder)
    if run_id:
        _write_pointer(folder, final.name, f"{RUNS}/{_run_file(run_id)}")
    _write_pointer(folder, final.name)
    _prune(folder, keep={final.name, previous or ""})
    return final


def _write_version_folder(folder: Path, name: str, files: list[tuple[str, bytes]]) -> Path:
    """Locally: the files into a ``.tmp-*`` folder, synced, then renamed to ``v-*``."""
    if folder.is_file():  # a value of the old pickling IO manager: replaced, never read
        folder.unlink()
    make_private_dirs(folder)
    tmp = folder / f".tmp-{name}"
    tmp.mkdir(mode=PRIVATE_DIR)
    tmp.chmod(PRIVATE_DIR)  # mkdir's mode is masked by the umask
    try:
        for file_name, data in files:
            _write_synced(tmp / file_name, data)
        final = folder / f"v-{name}"
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_version_objects(folder: Path, version: str, files: list[tuple[str, bytes]]) -> Path:
    """On an object store: one PUT per file (each atomic), the manifest last. Nothing names
    the version until the pointer is written after them, so a write killed here leaves
    objects no reader follows; a later write's prune deletes them."""
    final = folder / version
    for file_name, data in files:
        (final / file_name).write_bytes(data)
    return final


def _run_file(run_id: str) -> str:
    if not run_id.replace("-", "").isalnum():
        raise ValueError(f"run id {run_id!r} is not a Dagster run id")
    return run_id


def _write_pointer(folder: Path, version: str, name: str = POINTER) -> None:
    """Point ``CURRENT`` (or ``name``) at ``version``: a rename locally, one PUT on an object
    store."""
    pointer = folder / name
    if path_is_remote(folder):
        pointer.write_bytes(version.encode())
    else:
        atomic_write_bytes(pointer, version.encode())


def _write_synced(path: Path, data: bytes) -> None:
    """Write (0600) and flush to disk, so the pointer never names a version whose files are
    not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _current(folder: Path, name: str = POINTER) -> str | None:
    try:
        data = (folder / name).read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # said as the refusal it is, not as a decoding accident
        raise StoredValueError(
            f"{folder / name} is not a version pointer written by this IO manager (binary "
            "content, e.g. a pickle); it is never loaded. Delete it and re-materialise the asset"
        ) from None
    return text.strip() or None


def _prune(folder: Path, keep: set[str]) -> None:
    """Drop versions older than the one just replaced (a reader may still be on that one; a
    concurrent writer's newer version is never touched) and temporary folders of writes that
    died long ago. On an object store a killed write's objects are a ``v-*`` prefix that no
    pointer names; it is dropped here once a later version replaces the current one."""
    now = time.time()
    # a concurrent run may still read the version it wrote (runs/<run_id>) after other runs
    # wrote theirs: a version a run pointer names is kept for an hour
    keep = keep | _recent_run_versions(folder / RUNS, now)
    oldest_kept = min(k for k in keep if k)
    remote = path_is_remote(folder)
    for child in folder.iterdir():
        if child.name in keep or (not remote and not child.is_dir()):
            continue
        older = child.name.startswith("v-") and child.name < oldest_kept
        stale = (
            not remote
            and child.name.startswith(".tmp-")
            and now - child.stat().st_mtime > STALE_TMP_SECONDS
        )
        if older or stale:
            remove_tree(child)


def _version_age(version: str, now: float) -> float:
    """Seconds since ``v-<time_ns>-<id>`` was written (inf for a name not of that shape)."""
    stamp = version.removeprefix("v-").split("-", 1)[0]
    return now - int(stamp) / 1e9 if stamp.isdigit() else float("inf")


def _recent_run_versions(runs: Path, now: float) -> set[str]:
    """The versions run pointers name that were written within the hour; pointers whose
    version is older than a week are deleted (their versions are long pruned)."""
    recent: set[str] = set()
    try:
        pointers = list(runs.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return recent
    for pointer in pointers:
        if pointer.name.startswith("."):  # a pointer being written (atomic_write_bytes)
            continue
        version = _current(runs, pointer.name)
        age = _version_age(version or "", now)
        if age <= STALE_TMP_SECONDS and version:
            recent.add(version)
        elif age > RUN_POINTER_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                pointer.unlink()
    return recent


def read_value(folder: Path, label: str = "value", run_id: str | None = None) -> Any:
    """The value stored in ``folder`` by ``write_value``: the one run ``run_id`` wrote when it
    wrote one, else the current one; refuses anything else."""
    if not path_is_remote(folder) and folder.is_file():
        raise StoredValueError(
            f"{label}: {folder} is a single file, not a folder written by this IO manager (it "
            "may be a pickle of the old FilesystemIOManager); it is never loaded. Delete it and "
            "re-materialise the asset"
        )
    version = _current(folder, f"{RUNS}/{_run_file(run_id)}") if run_id else None
    version = version or _current(folder)
    if version is None:
        raise StoredValueError(f"{label}: nothing stored at {folder}; materialise the asset first")
    if "/" in version or not version.startswith("v-"):
        raise StoredValueError(f"{label}: {folder / POINTER} names {version!r}, not a version")
    manifest = folder / version / MANIFEST
    try:
        document = json.loads(manifest.read_bytes())
    except (OSError, ValueError) as exc:
        raise StoredValueError(
            f"{label}: {manifest} is not a readable JSON manifest ({exc}); re-materialise the asset"
        ) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoredValueError(
            f"{label}: {manifest} is not in the format {FORMAT!r}; re-materialise the asset"
        )
    return _Decoder(folder / version).decode(document["value"], label)


def _loading_run(context: dg.InputContext) -> str | None:
    """The run loading the input (None outside a run, e.g. ``build_input_context``)."""
    try:
        return context.step_context.run_id
    except dg.DagsterInvariantViolationError:
        return None


class DataIOManager(dg.ConfigurableIOManager):
    """Asset values as Parquet and JSON under ``base_dir`` (the platform's
    ``<storage_url>/storage``, which is ``$CHURN_HOME/storage`` unless set).

    ``base_dir`` is a folder or ``s3://<bucket>/<prefix>``; ``s3`` holds the S3 credentials.
    DataFrames are Parquet; the records of ``RECORDS`` and JSON values are JSON with their
    frames as Parquet beside them. Nothing is pickled or unpickled.
    """

    base_dir: str
    s3: S3Credentials = S3Credentials()

    def _root(self) -> Path:
        return open_location(self.base_dir, self.s3.storage_options())

    def _folder(self, context: dg.OutputContext) -> Path:
        parts = (
            context.get_asset_identifier() if context.has_asset_key else context.get_identifier()
        )
        return self._root().joinpath(*parts)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Store the output's value."""
        if obj is None and context.dagster_type.is_nothing:
            return
        label = context.asset_key.to_user_string() if context.has_asset_key else context.name
        folder = self._folder(context)
        write_value(folder, obj, label, context.run_id)
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(folder))})

    def read_partition(self, parts: list[str], label: str, run_id: str | None) -> Any:
        """The value stored for asset key path + partition ``parts`` (``run_id``'s own when
        that run wrote one), for a step that reads chosen partitions itself (training's
        window of weeks)."""
        return read_value(self._root().joinpath(*parts), label, run_id)

    def load_input(self, context: dg.InputContext) -> Any:
        """Read the upstream output's value."""
        upstream = context.upstream_output
        if context.has_asset_key:
            parts = context.get_asset_identifier()
            label = context.asset_key.to_user_string()
        elif upstream is not None:
            parts, label = upstream.get_identifier(), upstream.name
        else:
            raise StoredValueError(f"input {context.name} has no upstream output to load")
        # this run's own value when it wrote one (a concurrent run may have moved CURRENT)
        return read_value(self._root().joinpath(*parts), label, _loading_run(context))
