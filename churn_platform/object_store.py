"""Where artefacts live: a local folder, or an S3 bucket through universal-pathlib (``UPath``).

``CHURN_STORAGE_URL`` names the place (``settings.storage_url``). A local place is a plain
``pathlib.Path`` (the local code paths keep their fsync-and-rename atomic writes); an
``s3://`` place is a ``UPath`` on s3fs. No Dagster here: the model servers use it too; the
Dagster resources pass their credentials (``resources.s3_credentials.S3Credentials``) as
s3fs options, and processes outside Dagster read the usual AWS variables
(``options_from_env``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from upath import UPath

from churn_platform.settings import REMOTE_SCHEMES

# s3fs option -> variables, first set one wins (botocore reads AWS_ENDPOINT_URL_S3 before
# AWS_ENDPOINT_URL too)
ENV_VARS: dict[str, tuple[str, ...]] = {
    "key": ("AWS_ACCESS_KEY_ID",),
    "secret": ("AWS_SECRET_ACCESS_KEY",),
    "token": ("AWS_SESSION_TOKEN",),
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_DEFAULT_REGION", "AWS_REGION"),
}


def env_name(option: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The AWS variable that sets s3fs ``option`` here (the first one set), or None."""
    environ = os.environ if environ is None else environ
    return next((n for n in ENV_VARS[option] if environ.get(n)), None)


def s3_options(
    key: str = "",
    secret: str = "",
    token: str = "",
    endpoint_url: str = "",
    region: str = "",
) -> dict[str, Any]:
    """``s3fs.S3FileSystem`` keyword arguments for the values given (empty: botocore's chain)."""
    options: dict[str, Any] = {}
    for name, value in (("key", key), ("secret", secret), ("token", token)):
        if value:
            options[name] = value
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs options from the AWS variables (for processes outside Dagster: model servers)."""
    environ = os.environ if environ is None else environ
    values = {}
    for option in ENV_VARS:
        name = env_name(option, environ)
        if name is not None:
            values[option] = environ[name]
    return s3_options(**values)


def is_remote(url: str) -> bool:
    """Whether ``url`` names an object store rather than a folder."""
    return urlsplit(url).scheme in REMOTE_SCHEMES


def open_location(url: str, options: Mapping[str, Any] | None = None) -> Path:
    """``url`` as a path: ``pathlib.Path`` for a folder or ``file://`` URL, ``UPath`` for
    ``s3://`` (typed ``Path``: a ``UPath`` offers the same methods)."""
    scheme = urlsplit(url).scheme
    if scheme in REMOTE_SCHEMES:
        # no listing cache: batches and versions are written by other processes (servers,
        # step pods), and a long-lived reader (the sensor's daemon) must see them
        path: Any = UPath(url, **{"use_listings_cache": False, **dict(options or {})})
        return path
    if scheme == "file":
        return Path(urlsplit(url).path)
    if len(scheme) > 1:  # one letter: a Windows drive
        raise ValueError(
            f"storage location {url!r}: the scheme {scheme!r} is not supported; give a folder, "
            "a file:// URL or s3://<bucket>/<prefix>"
        )
    return Path(url).expanduser().resolve()


def path_is_remote(path: Path) -> bool:
    """Whether ``path`` (from ``open_location``) is on an object store."""
    return isinstance(path, UPath) and getattr(path, "protocol", "") in REMOTE_SCHEMES


def remove_tree(path: Path) -> None:
    """Delete a folder (local) or every object under a prefix (object store); absent is fine."""
    if path_is_remote(path):
        upath: Any = path
        with contextlib.suppress(FileNotFoundError):
            upath.fs.rm(upath.path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)
