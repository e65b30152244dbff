"""A pytest plugin: the end of a run lists what was skipped and the one command that enables it.

A test that cannot run here (no Kubernetes API server built, no Chromium, no Prometheus or
PostgreSQL binaries) skips, and ``-ra``'s per-test lines scroll past. This closing section
groups the skips by reason, so nobody mistakes "passed" for "everything ran".

Under CI (``CI`` set, as GitHub Actions and ``.ci/run`` do) a skip that a command would
enable fails the run: CI installs everything, so such a skip means set-up broke, and a green run
must mean the test ran. Skips nothing can enable here ("cannot run on this machine") still pass.
Registered by ``conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

import pytest

SETUP = "bash deploy/local/setup.sh"
KUBE = "bash .ci/build-kube-apiserver.sh"
# (what the reason mentions, the command that makes it go away); first match wins
ENABLERS = (
    ("kube-apiserver", KUBE),
    ("etcd", KUBE),
    ("chromium", SETUP),
    ("prometheus", SETUP),
    ("promtool", SETUP),
    ("postgresql", SETUP),
    ("actionlint", SETUP),
    ("dagster-webserver", SETUP),
    ("dagster-dg-cli", SETUP),
    ("java runtime", SETUP),
)


def enabling_command(reason: str) -> str | None:
    """The command that enables tests skipped for ``reason`` (None when no command can)."""
    lowered = reason.lower()
    for needle, command in ENABLERS:
        if needle in lowered:
            return command
    quoted = re.search(r"`([^`]+)`", reason)  # a reason that names its own fix
    return quoted.group(1) if quoted else None


def skip_lines(skips: list[tuple[str, str]]) -> list[str]:
    """Lines for ``(test file, reason)`` pairs: count, reason, files, enabling command."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in skips:
        by_reason[reason].append(path)
    lines = []
    for reason, paths in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        files = ", ".join(sorted(set(paths)))
        lines.append(f"{len(paths)} skipped ({files}): {reason}")
        command = enabling_command(reason)
        lines.append(
            f"    enable with: {command}" if command else "    (cannot run on this machine)"
        )
    return lines


def _skips(config: pytest.Config) -> list[tuple[str, str]]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    return [(report.nodeid.split("::")[0], _reason(report)) for report in skipped]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def enablable_skips(skips: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The skips a command would enable (under CI these fail the run)."""
    return [(path, reason) for path, reason in skips if enabling_command(reason)]


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config):
    """Close the run with the skipped tests grouped by reason and how to enable them.

    The outermost wrapper, so the section comes after ``-ra``'s short summary, just above the
    final counts.
    """
    result = yield
    skips = _skips(config)
    if skips:
        terminalreporter.section(f"{len(skips)} tests did not run here", sep="=", yellow=True)
        for line in skip_lines(skips):
            terminalreporter.line(line)
        enablable = enablable_skips(skips)
        if _in_ci() and enablable:
            terminalreporter.line(
                f"CI: {len(enablable)} of these could run here once set up; "
                "they fail this run (CI sets everything up, so set-up broke)",
                red=True,
            )
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a run whose tests passed but that skipped something set-up enables fails."""
    if _in_ci() and exitstatus == pytest.ExitCode.OK and enablable_skips(_skips(session.config)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
