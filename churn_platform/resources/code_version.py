"""Which code a run used: the git commit recorded with every registered model."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import dagster as dg

UNKNOWN = "unknown"


def git_head(repo_dir: str = "") -> str:
    """``git rev-parse HEAD`` in ``repo_dir`` (default: the folder of this package), or
    'unknown' when git cannot say."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    return out.stdout.strip() if out.returncode == 0 else UNKNOWN


class CodeVersion(dg.ConfigurableResource):
    """The commit of the running code.

    ``commit`` fixes it (images without a .git folder set it from ``GIT_COMMIT``); left
    empty, git in ``repo_dir`` (default: the folder of this package) is asked once, when
    the resource is built, i.e. when the code location loads. So the commit is that of the
    code the location loaded, and the location reports it as this resource's configuration
    (the UI's resource page, GraphQL), which ``python -m churn_platform trigger`` checks.
    """

    commit: str = ""
    repo_dir: str = ""

    def __init__(self, **config: Any) -> None:
        if not config.get("commit"):
            config["commit"] = git_head(str(config.get("repo_dir") or ""))
        super().__init__(**config)

    def git_commit(self) -> str:
        """The commit, or 'unknown' when neither the setting nor git could say."""
        return self.commit or UNKNOWN
