"""The commit recorded with every model comes from a resource: a setting, else real git."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from churn_platform.resources.code_version import UNKNOWN, CodeVersion


def test_the_setting_wins_over_git():
    assert CodeVersion(commit="0123abc").git_commit() == "0123abc"


def test_git_names_the_checked_out_commit(tmp_path: Path):
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "f.txt").write_text("x")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "m")
    commit = CodeVersion(repo_dir=str(tmp_path)).git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and commit == git("rev-parse", "HEAD")


def test_a_folder_outside_any_repository_is_unknown(tmp_path: Path):
    # pytest's tmp_path lies outside every git checkout
    assert CodeVersion(repo_dir=str(tmp_path)).git_commit() == UNKNOWN


def test_the_commit_is_resolved_when_the_resource_is_built(tmp_path: Path):
    """The location reports the commit it loaded as the resource's configuration."""
    subprocess.run(["git", "-C", str(tmp_path), "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f.txt"], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
        + ["commit", "-q", "-m", "m"],
        check=True,
    )
    resource = CodeVersion(repo_dir=str(tmp_path))
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert resource.commit == head and resource.git_commit() == head
