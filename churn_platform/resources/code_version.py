"""Which code a run used: the git commit recorded with every registered model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg

UNKNOWN = "unknown"


class CodeVersion(dg.ConfigurableResource):
    """The commit of the running code.

    ``commit`` fixes it (images without a .git folder set it from ``GIT_COMMIT``); empty
    means ask git in ``repo_dir`` (default: the folder of this package).
    """

    commit: str = ""
    repo_dir: str = ""

    def git_commit(self) -> str:
        """The commit, or 'unknown' when neither the setting nor git can say."""
        if self.commit:
            return self.commit
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=self.repo_dir or Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            return UNKNOWN
        return out.stdout.strip() if out.returncode == 0 else UNKNOWN
