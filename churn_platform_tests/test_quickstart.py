"""The README's two quick-start commands are the ones CI runs, and the set-up they share is cheap
the second time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKER = "<!-- quickstart -->"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def quickstart_commands(readme: str) -> list[str]:
    """The commands of the fenced block right after the quick-start marker (comments dropped)."""
    found = re.search(rf"{re.escape(MARKER)}\s*```\w*\n(.*?)```", readme, re.S)
    assert found, f"README.md has no fenced code block right after {MARKER}"
    lines = (line.split("#", 1)[0].strip() for line in found.group(1).splitlines())
    return [line for line in lines if line]


def ci_command() -> str:
    """The last command of .ci/run: what CI runs once the machine has its tools."""
    lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "fi"))][-1]


def dry_run(target: str) -> str:
    """What ``make <target>`` would execute (recipes printed, nothing run)."""
    out = subprocess.run(
        ["make", "--dry-run", "--always-make", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@needs_make
def test_the_readme_quick_start_is_two_commands_and_the_second_is_what_ci_runs():
    commands = quickstart_commands((REPO / "README.md").read_text())
    assert len(commands) == 2, f"the quick start should be two commands, not {commands}"
    run, test = commands
    assert test == ci_command() == "make test"
    assert run == "make run"
    ran = dry_run("run")
    assert "bash deploy/local/setup.sh" in ran and "python -m churn_platform run" in ran
    tested = dry_run("test")
    for step in (
        "bash deploy/local/setup.sh",
        "bash .ci/build-kube-apiserver.sh",
        "source deploy/local/env.sh",
        "ruff check .",
        "ruff format --check .",
        "mypy churn_platform",
        "pytest",
    ):
        assert step in tested, (step, tested)


def _fake_repo(root: Path) -> tuple[Path, Path]:
    """A copy of what setup.sh reads, with a stub pip (records its calls) and stub apt tools."""
    repo = root / "repo"
    (repo / "deploy/local").mkdir(parents=True)
    for name in ("pyproject.toml", "constraints.txt", "deploy/local/setup.sh"):
        shutil.copy(REPO / name, repo / name)
    shutil.copy(REPO / "deploy/local/dagster.yaml", repo / "deploy/local/dagster.yaml")
    calls = root / "calls.log"
    venv_bin = repo / ".venv/bin"
    tools = root / "tools"
    venv_bin.mkdir(parents=True)
    tools.mkdir()
    (venv_bin / "python").symlink_to(sys.executable)
    for stub, folder in (("pip", venv_bin), ("apt-get", tools), ("sudo", tools)):
        (folder / stub).write_text(f'#!/bin/sh\necho "{stub} $*" >> {calls}\n')
        (folder / stub).chmod(0o755)
    return repo, calls


def test_setup_installs_python_packages_only_when_the_lock_file_or_pyproject_changed(
    tmp_path: Path,
):
    repo, calls = _fake_repo(tmp_path)
    env = {**os.environ, "PATH": f"{tmp_path / 'tools'}:{os.environ['PATH']}"}

    def setup() -> list[str]:
        calls.unlink(missing_ok=True)
        out = subprocess.run(
            ["bash", "deploy/local/setup.sh"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return [c for c in (calls.read_text() if calls.exists() else "").splitlines() if "pip" in c]

    first = setup()
    assert "pip install -q -c constraints.txt -e .[dev]" in first, first
    assert (repo / "data/dagster/dagster.yaml").read_text() == (
        REPO / "deploy/local/dagster.yaml"
    ).read_text()
    assert setup() == []  # nothing changed: nothing installed
    with (repo / "constraints.txt").open("a") as lock:
        lock.write("# a new pin\n")
    assert "pip install -q -c constraints.txt -e .[dev]" in setup()
