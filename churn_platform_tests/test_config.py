"""``config.load_config``: the environment and the platform file parsed once, into a frozen
configuration; without a platform file, the single ``churn`` model of earlier releases."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from churn_platform.config import DEFAULT_SCHEDULE, load_config
from churn_platform.core.spec import DEFAULT_SPEC_PATH
from churn_platform.settings import SettingsError

SPEC = DEFAULT_SPEC_PATH.read_text()


def _write(folder: Path, text: str) -> Path:
    path = folder / "platform.yaml"
    path.write_text(text)
    return path


def test_without_a_platform_file_there_is_one_unprefixed_churn_model(tmp_path: Path) -> None:
    config = load_config({"CHURN_HOME": str(tmp_path), "CHURN_STAGING_PORT": "8101"})
    (model,) = config.models
    assert (model.name, model.key_prefix, model.registered_model) == ("churn", (), "churn_model")
    assert model.key("churn_snapshot") == ("churn_snapshot",)
    assert model.named("psi_drift_sensor") == "psi_drift_sensor"
    assert model.resource_key("deployment") == "deployment"
    assert model.state_dir(config.home) == tmp_path.resolve() / "deployments"
    assert model.staging_port == 8101 and model.source.kind == "synthetic"
    assert config.mlflow_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'mlflow.db'}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.auto_release = True  # type: ignore[misc]


def test_a_platform_file_lists_models_with_their_own_names_keys_and_state(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "accounts.yaml").write_text(SPEC)
    path = _write(
        tmp_path,
        """models:
  - name: churn
    spec: churn
    source: {kind: synthetic, rows: 3000}
  - name: accounts
    spec: specs/accounts.yaml
    source: {kind: file, path: data/accounts.csv}
    ports: {staging: 8201, production: 8202}
    schedule: "0 3 * * 2"
""",
    )
    config = load_config({"CHURN_HOME": str(tmp_path / "home"), "CHURN_PLATFORM": str(path)})
    churn, accounts = config.models
    assert churn.key("holdout_set") == ("churn", "holdout_set") and churn.source.rows == 3000
    assert churn.registered_model == "churn_model" and churn.schedule == DEFAULT_SCHEDULE
    assert accounts.spec_path == str(tmp_path / "specs" / "accounts.yaml")
    assert accounts.source.path == str(tmp_path / "data" / "accounts.csv")
    assert (accounts.staging_port, accounts.production_port) == (8201, 8202)
    assert accounts.registered_model == "accounts_model" and accounts.schedule == "0 3 * * 2"
    assert accounts.named("psi_drift_sensor") == "accounts_psi_drift_sensor"
    assert accounts.resource_key("deployment") == "accounts__deployment"
    assert churn.state_dir(config.home) != accounts.state_dir(config.home)
    assert config.model("accounts") is accounts
    with pytest.raises(SettingsError, match=r"no model 'nope'.*\['churn', 'accounts'\]"):
        config.model("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []\n", "one key, 'models:'"),
        (
            "models:\n  - {name: a, spec: churn, colour: red}\n",
            r"models\[0\] \(a\) has unknown key",
        ),
        ("models:\n  - {name: Bad-Name}\n", r"models\[0\] \(Bad-Name\)\.name 'Bad-Name'"),
        ("models:\n  - {name: a}\n  - {name: a}\n", r"\['a'\] appear twice"),
        ("models:\n  - {name: a, spec: missing/x.yaml}\n", r"models\[0\] \(a\)\.spec: spec file"),
        ("models:\n  - {name: a, source: {kind: file}}\n", r"source needs path"),
        ("models:\n  - {name: a, source: {kind: sql, table: t}}\n", r"needs url_env"),
        ("models:\n  - {name: a, source: {kind: ftp}}\n", r"source\.kind must be one of"),
        (
            "models:\n  - {name: a, ports: {staging: 9001}}\n  - {name: b, ports: {production: 9001}}\n",
            "share a router port",
        ),
    ],
)
def test_a_bad_platform_file_names_the_model_key_and_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError, match=message) as raised:
        load_config({"CHURN_HOME": str(tmp_path), "CHURN_PLATFORM": str(path)})
    assert "CHURN_PLATFORM=" in str(raised.value)


def test_a_missing_platform_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CHURN_PLATFORM=.*cannot be read"):
        load_config({"CHURN_PLATFORM": str(tmp_path / "nope.yaml")})
