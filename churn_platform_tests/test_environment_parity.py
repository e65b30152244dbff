"""Environment parity (issue 25): a server reports its Python and packages on ``/health``;
the staging check ``environment_parity`` compares them with the model's logged pins and
fails naming the package and both versions. Real MLflow store, real model servers."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import httpx
import pytest
import sklearn

from churn_platform.core.environment import (
    PINNED_PACKAGES,
    installed_versions,
    parity_problems,
    parse_requirements,
)
from churn_platform.resources.mlflow_registry import pinned_requirements
from churn_platform.resources.release_probes import ReleaseProbes
from churn_platform.serving import integration
from churn_platform.testing import (
    RegisteredModels,
    log_and_register,
    start_model_server,
)

REPO = Path(__file__).resolve().parent.parent


def test_requirements_pins_are_read_and_others_left_out():
    pins = parse_requirements(
        ["mlflow==3.1", "Scikit_Learn == 1.9.1", "pandas", "numpy>=2", "# c", "skops==0.1 ; x"]
    )
    assert pins == {"mlflow": "3.1", "scikit-learn": "1.9.1", "skops": "0.1"}


def test_parity_names_the_package_and_both_versions():
    served = {"python": "3.11.7", "packages": {"scikit-learn": "1.9.1", "pandas": "2.0"}}
    assert parity_problems({"scikit-learn": "1.9.1"}, "3.11.2", served) == []
    problems = parity_problems({"scikit-learn": "1.0.0", "skops": "0.9"}, "3.12.1", served)
    assert problems == [
        "scikit-learn: model requires 1.0.0, server has 1.9.1",
        "skops: model requires 0.9, server has not reported",
        "python: model was trained on 3.12.1, server runs 3.11.7",
    ]


def test_every_registered_pin_is_the_constraints_files_version():
    """The model-server image installs with constraints.txt (its Dockerfile); the training
    environment pins the same file, so both sides of the parity check come from one pin."""
    constraints = parse_requirements((REPO / "constraints.txt").read_text().splitlines())
    dockerfile = (REPO / "deploy/docker/model-server.Dockerfile").read_text()
    assert re.search(r"pip install --constraint constraints\.txt", dockerfile)
    for pin in pinned_requirements():
        name, version = pin.split("==")
        assert constraints.get(name) == version, (pin, constraints.get(name))
    assert set(installed_versions()) == set(PINNED_PACKAGES)


@pytest.mark.integration
def test_a_server_whose_sklearn_differs_from_the_models_pin_fails_parity(
    registered_models: RegisteredModels, tmp_path: Path
):
    models = registered_models
    probes = ReleaseProbes()
    good = probes.model_environment(models.model_uris["1"], models.tracking_uri)
    assert good[0]["scikit-learn"] == sklearn.__version__
    assert good[1] == platform.python_version()
    # the same pipeline, logged as if trained with another scikit-learn
    pipeline = models.pipelines["1"]
    other = log_and_register(
        pipeline, models.rows, models.tracking_uri, ["scikit-learn==1.0.0", "pandas"]
    )
    models.model_uris[other] = f"models:/churn_model/{other}"
    bad = probes.model_environment(models.model_uris[other], models.tracking_uri)
    assert bad[0]["scikit-learn"] == "1.0.0"
    with start_model_server(models, other, tmp_path) as server:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        assert health["environment"]["packages"]["scikit-learn"] == sklearn.__version__
        assert health["environment"]["python"] == platform.python_version()
        ok = integration.environment_parity_check(server.url, *good)
        assert ok.passed, ok.description
        failed = integration.environment_parity_check(server.url, *bad)
    assert not failed.passed
    assert failed.description == (
        f"scikit-learn: model requires 1.0.0, server has {sklearn.__version__}"
    )
