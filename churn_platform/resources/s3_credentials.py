"""S3 credentials of the Dagster resources that write artefacts (``CHURN_STORAGE_URL``).

``S3Credentials.from_env`` passes each AWS variable that is set as ``dg.EnvVar``, so the
Dagster UI shows the variable's name, never its value; the ones not set are left to
botocore's own chain (instance profile, IRSA web identity, ~/.aws). The paths themselves
are ``churn_platform.object_store``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from churn_platform import object_store
from churn_platform.object_store import open_location, path_is_remote, remove_tree

__all__ = ["S3Credentials", "open_location", "path_is_remote", "remove_tree"]


class S3Credentials(dg.Config):
    """S3 access for ``s3://`` locations; empty fields fall back to botocore's own chain."""

    key: str = ""
    secret: str = ""
    token: str = ""
    endpoint_url: str = ""
    region: str = ""

    @classmethod
    def from_env(cls) -> S3Credentials:
        """The AWS variables that are set, each as ``dg.EnvVar`` (the UI shows names only)."""
        values: dict[str, Any] = {}
        for option in object_store.ENV_VARS:
            name = object_store.env_name(option)
            if name is not None:
                values[option] = dg.EnvVar(name)
        return cls(**values)

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments of ``s3fs.S3FileSystem`` for the fields that are set."""
        return object_store.s3_options(
            self.key, self.secret, self.token, self.endpoint_url, self.region
        )
