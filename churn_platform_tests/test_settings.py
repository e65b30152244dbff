"""Every setting is parsed in one place; a bad value names the variable, the value and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from churn_platform import cli, settings
from churn_platform.definitions import build_definitions

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("CHURN_PRODUCTION_PORT", "", "CHURN_PRODUCTION_PORT='' is set but empty"),
        ("CHURN_STAGING_PORT", "eighty", "CHURN_STAGING_PORT='eighty' is not an integer"),
        ("CHURN_PSI_THRESHOLD", "lots", "CHURN_PSI_THRESHOLD='lots' is not a number"),
        ("CHURN_PRODUCTION_PORT", "70000", "CHURN_PRODUCTION_PORT='70000' is out of range"),
        ("CHURN_FAULT_RATE", "1.5", "CHURN_FAULT_RATE='1.5' is out of range"),
        ("CHURN_DRIFT_MIN_ROWS", "0", "CHURN_DRIFT_MIN_ROWS='0' is out of range"),
        ("CHURN_ENV", "prod", "CHURN_ENV='prod' is not a known value"),
        ("CHURN_SOURCE", "s3", "CHURN_SOURCE='s3' is not a known value"),
        ("CHURN_AUTO_RELEASE", "sometimes", "CHURN_AUTO_RELEASE='sometimes' is not a boolean"),
        ("CHURN_SYNTHETIC_AS_OF", "2026-13-01", "CHURN_SYNTHETIC_AS_OF='2026-13-01' is not a date"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_accepted(name, raw, expected):
    with pytest.raises(settings.SettingsError) as caught:
        settings.get(name, {name: raw})
    message = str(caught.value)
    assert message.startswith(expected)
    assert settings.BY_NAME[name].accepted() in message


def test_the_accepted_values_are_spelled_out():
    assert settings.BY_NAME["CHURN_PRODUCTION_PORT"].accepted() == "an integer in 0..65535"
    assert settings.BY_NAME["CHURN_FAULT_RATE"].accepted() == "a number in 0..1"
    assert settings.BY_NAME["CHURN_ENV"].accepted() == "one of local, kubernetes"
    assert settings.BY_NAME["CHURN_PSI_THRESHOLD"].accepted() == "a number > 0"


def test_good_values_parse_to_their_types_and_unset_means_the_default():
    env = {
        "CHURN_PRODUCTION_PORT": " 8081 ",
        "CHURN_AUTO_RELEASE": "true",
        "CHURN_FAULT_RATE": "0.25",
        "CHURN_SOURCE": "file",
    }
    assert settings.get("CHURN_PRODUCTION_PORT", env) == 8081
    assert settings.get("CHURN_AUTO_RELEASE", env) is True
    assert settings.get("CHURN_AUTO_RELEASE", {"CHURN_AUTO_RELEASE": "0"}) is False
    assert settings.get("CHURN_FAULT_RATE", env) == 0.25
    assert settings.get("CHURN_SOURCE", env) == "file"
    assert settings.get("CHURN_STAGING_PORT", env) == 0
    assert settings.source("CHURN_PRODUCTION_PORT", env) == "environment"
    assert settings.source("CHURN_STAGING_PORT", env) == "default"
    assert settings.get("CHURN_SYNTHETIC_AS_OF", {"CHURN_SYNTHETIC_AS_OF": " 2026-11-18 "}) == (
        "2026-11-18"
    )
    assert settings.get("CHURN_SYNTHETIC_AS_OF", {"CHURN_SYNTHETIC_AS_OF": ""}) == ""


def test_churn_home_has_one_default_that_knows_both_environments():
    assert settings.get("CHURN_HOME", {}) == "data"
    assert settings.get("CHURN_HOME", {"CHURN_ENV": "kubernetes"}) == "/var/lib/churn"
    assert settings.get("CHURN_HOME", {"CHURN_HOME": "/srv/churn"}) == "/srv/churn"
    assert settings.get("DAGSTER_HOME", {"CHURN_HOME": "/srv/churn"}) == "/srv/churn/dagster"


def test_every_churn_variable_in_the_code_is_declared():
    """A new ``CHURN_*`` variable read anywhere in the package must join the table."""
    import re

    found: set[str] = set()
    for path in (ROOT / "churn_platform").rglob("*.py"):
        found |= set(re.findall(r"\bCHURN_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert found - set(settings.BY_NAME) == set()


def test_a_bad_setting_stops_the_definitions_load_naming_it(churn_home, monkeypatch):
    monkeypatch.setenv("CHURN_PRODUCTION_PORT", "")
    with pytest.raises(settings.SettingsError, match="CHURN_PRODUCTION_PORT='' is set but empty"):
        build_definitions()


def test_auto_release_is_read_when_the_definitions_load_not_at_import(churn_home, monkeypatch):
    monkeypatch.setenv("CHURN_AUTO_RELEASE", "yes")
    job = build_definitions().resolve_job_def("churn_retraining")
    assert "production_deployment" in {k.path[-1] for k in job.asset_layer.executable_asset_keys}
    monkeypatch.setenv("CHURN_AUTO_RELEASE", "maybe")
    with pytest.raises(settings.SettingsError, match="CHURN_AUTO_RELEASE='maybe'"):
        build_definitions()


def test_secrets_are_masked():
    assert settings.mask("postgresql://churn:s3cret@db:5432/crm") == "postgresql://***@db:5432/crm"
    assert settings.mask("https://prom.example/api?token=abc") == "https://prom.example/api?***"
    assert settings.mask("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    assert settings.mask("hunter2") == "*** (7 characters)"


def test_the_settings_command_lists_values_sources_and_masks_secrets(
    churn_home, monkeypatch, capsys
):
    monkeypatch.setenv("CHURN_SOURCE_URL", "postgresql://churn:s3cret@db:5432/crm")
    monkeypatch.setenv("CHURN_SYNTHETIC_ROWS", "5000")
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line[0].isspace()}
    assert set(lines) == set(settings.BY_NAME)
    assert lines["CHURN_SYNTHETIC_ROWS"].split()[1:] == ["5000", "[environment]"]
    assert lines["CHURN_PRODUCTION_PORT"].split()[1:] == ["0", "[default]"]
    assert lines["CHURN_HOME"].split()[1:] == [str(churn_home), "[environment]"]
    assert "postgresql://***@db:5432/crm" in lines["CHURN_SOURCE_URL"]
    assert "s3cret" not in out


def test_the_settings_command_marks_a_bad_value_and_fails(churn_home, monkeypatch, capsys):
    monkeypatch.setenv("CHURN_PRODUCTION_PORT", "")
    assert cli.main(["settings"]) == 1
    captured = capsys.readouterr()
    assert "INVALID: CHURN_PRODUCTION_PORT='' is set but empty" in captured.out
    assert "1 setting(s) invalid" in captured.err


def test_the_cli_run_reports_a_bad_setting_without_a_traceback(churn_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "DAGSTER_"))}
    env.update(CHURN_HOME=str(churn_home), CHURN_PRODUCTION_PORT="")
    done = subprocess.run(
        [sys.executable, "-m", "churn_platform", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "configuration error: CHURN_PRODUCTION_PORT='' is set but empty; set an integer in "
        "0..65535, or unset it for the default 0"
    )


def test_dagster_definitions_validate_shows_the_bad_setting_first(churn_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "DAGSTER_"))}
    env.update(CHURN_HOME=str(churn_home), DAGSTER_HOME=str(churn_home), CHURN_ENV="prod")
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert (
        "SettingsError: CHURN_ENV='prod' is not a known value; set one of local, kubernetes"
        in output
    )
    # the stack shows only where the definitions load, not the parsing internals
    assert "settings.py" not in output and "environments.py" not in output
