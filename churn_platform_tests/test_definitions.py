"""The one Definitions object, per environment."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from churn_platform.definitions import build_definitions
from churn_platform.resources.deployment_target import (
    KubernetesDeploymentResource,
    LocalDeploymentResource,
)

ASSETS = {
    "churn_snapshot",
    "validated_churn_data",
    "holdout_set",
    "challenger_model",
    "evaluation_report",
    "staging_deployment",
    "production_deployment",
    "model_performance",
    "churn_scores",
}


def test_local_definitions_hold_the_graph_checks_schedule_and_sensor(churn_home):
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == ASSETS
    assert all(graph.get(dg.AssetKey(k)).group_name == "churn" for k in ASSETS)
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("validated_churn_data", "customer_id_unique") in checks
    assert ("challenger_model", "contract_invariance") in checks
    assert ("production_deployment", "canary_analysis") in checks
    assert {a for a, _ in checks} == ASSETS
    assert sorted(s.name for s in defs.schedules) == ["weekly_retraining", "weekly_scoring"]
    assert sorted(s.name for s in defs.sensors) == [
        "code_version_sensor",
        "freshness_notification",
        "new_file_sensor",
        "notification_outbox",
        "performance_sensor",
        "psi_drift_sensor",
        "rollback_notification",
        "run_failure_notification",
        "serving_watchdog_sensor",
    ]
    assert defs.resolve_job_def("churn_end_to_end").executor_def.name == "in_process"
    assert isinstance(defs.resources["deployment"], LocalDeploymentResource)


def test_kubernetes_definitions_use_the_cluster_target_and_a_pod_per_step(churn_home, monkeypatch):
    monkeypatch.setenv("CHURN_ENV", "kubernetes")
    monkeypatch.setenv("CHURN_MODEL_SERVER_IMAGE", "registry.example/churn-model-server:0.1.0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.churn-dagster.svc.cluster.local:5000")
    defs = build_definitions()
    assert isinstance(defs.resources["deployment"], KubernetesDeploymentResource)
    assert defs.resolve_job_def("churn_retraining").executor_def.name == "churn_k8s_executor"
    tag = defs.resolve_assets_def("challenger_model").op.tags["dagster-k8s/config"]
    training = json.loads(tag) if isinstance(tag, str) else tag
    assert training["container_config"]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}


def test_unknown_environment_is_named_with_the_choices(churn_home, monkeypatch):
    monkeypatch.setenv("CHURN_ENV", "staging-cluster")
    with pytest.raises(ValueError, match="CHURN_ENV='staging-cluster'.*local, kubernetes"):
        build_definitions()


def test_k8s_step_pods_mount_the_claim_only_for_local_storage(churn_home, monkeypatch):
    from churn_platform.config import load_config
    from churn_platform.resources.environments import k8s_executor_config
    from churn_platform.settings import kubernetes_settings_from_env

    monkeypatch.setenv("CHURN_ENV", "kubernetes")
    monkeypatch.delenv("CHURN_STORAGE_URL", raising=False)
    local = k8s_executor_config(load_config())
    assert local["volume_mounts"] == [{"name": "churn-home", "mountPath": str(churn_home)}]
    assert kubernetes_settings_from_env().extra_env == {}  # model-server pods: nothing to add
    monkeypatch.setenv("CHURN_STORAGE_URL", "s3://churn-artifacts/platform")
    remote = k8s_executor_config(load_config())
    assert "volumes" not in remote and "volume_mounts" not in remote
    assert "CHURN_STORAGE_URL=s3://churn-artifacts/platform" in remote["env_vars"]
    # model-server pods write their inference logs there too
    pods = kubernetes_settings_from_env()
    assert pods.extra_env == {"CHURN_STORAGE_URL": "s3://churn-artifacts/platform"}
    assert pods.storage_secret == "churn-object-store"
