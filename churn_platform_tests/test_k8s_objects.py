"""Offline checks of everything the Kubernetes side ships, against the API schemas.

* ``targets.kubernetes.objects`` builders: every generated object validates with
  ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict: unknown fields fail);
  the Gateway API HTTPRoute (a CRD, not in those schemas) validates against the
  structural schema in ``deploy/schemas`` — the same schema the real-apiserver tests
  install as the CRD.
* every YAML manifest under ``deploy/k8s`` validates the same way; the reference
  templates equal the builders' output; the Prometheus config and alert rule pass
  ``promtool`` (including a rule unit test) when promtool is installed.
* ``deploy/helm/dagster-values.yaml`` parses and only uses keys of Dagster's chart.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from churn_platform.targets.kubernetes import objects as k8s

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S_DIR = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
# Validate against a current Kubernetes; the real-apiserver tests cover the 1.20 server.
K8S_VERSION = "1.30"

CRD_SCHEMAS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_v1_httproute.json",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway.networking.k8s.io_v1_gateway.json",
}
ALERT_EXPR = (
    'sum(rate(http_requests_total{status=~"5.."}[5m])) by (model_version) '
    "/ sum(rate(http_requests_total[5m])) by (model_version) > 0.05"
)


def _strict(schema: dict) -> dict:
    """The CRD schema with unknown fields forbidden where it lists properties.

    A structural CRD schema may not say ``additionalProperties: false`` (the API server
    prunes unknown fields instead); offline we want a typo to fail, so add it here.
    """
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        props = node.get("properties")
        if (
            isinstance(props, dict)
            and props
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "metadata" not in props
        ):
            node["additionalProperties"] = False
        for child in (props or {}).values():
            walk(child)
        if isinstance(node.get("items"), dict):
            walk(node["items"])

    walk(schema)
    return schema


def validate_object(obj: dict) -> None:
    """Validate one object: Kubernetes kinds via kubernetes-validate, CRDs via deploy/schemas."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
        jsonschema.Draft202012Validator(_strict(schema)).validate(obj)
        name = obj["metadata"]["name"]
        assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name), name
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _spec(**kw) -> k8s.ServingSpec:
    return k8s.ServingSpec(
        image="churn-model-server:0.1.0", tracking_uri="http://mlflow:5000", **kw
    )


def _objects(version: str = "3", environment: str = "production") -> tuple[dict, dict]:
    name = k8s.object_name(version)
    common = dict(
        name=name,
        namespace=f"churn-{environment}",
        environment=environment,
        version=version,
        model_uri=f"models:/churn_model/{version}",
    )
    return k8s.deployment(spec=_spec(), **common), k8s.service(**common)


# -- builders --------------------------------------------------------------------------


def test_deployment_validates_and_carries_the_serving_contract() -> None:
    dep, _ = _objects("3")
    validate_object(dep)
    assert dep["metadata"]["name"] == "churn-model-v3"
    labels = dep["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "churn-model"
    assert labels[k8s.LABEL_MODEL_NAME] == "churn_model"
    assert labels[k8s.LABEL_MODEL_VERSION] == "3"
    assert labels[k8s.LABEL_ENVIRONMENT] == "production"
    template = dep["spec"]["template"]
    # the selector must pick the template's pods and nothing of another version
    assert dep["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(k8s.HTTP_PORT)
    assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    (container,) = template["spec"]["containers"]
    assert container["image"] == "churn-model-server:0.1.0"
    assert container["command"] == k8s.SERVER_COMMAND
    args = container["args"]
    assert args[args.index("--model-uri") + 1] == "models:/churn_model/3"
    assert args[args.index("--version") + 1] == "3"
    assert args[args.index("--port") + 1] == str(k8s.HTTP_PORT)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["OMP_NUM_THREADS"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_deployment_on_object_storage_reads_the_bucket_credentials_from_a_secret() -> None:
    # a server on an object store writes its inference log to the bucket: it needs the AWS
    # variables, from the Secret by reference (never as values in the Deployment)
    dep = k8s.deployment(
        name="churn-model-v3",
        namespace="churn-production",
        environment="production",
        version="3",
        model_uri="models:/churn_model/3",
        spec=_spec(
            storage_secret="churn-object-store",
            extra_env={"CHURN_STORAGE_URL": "s3://bucket/churn"},
        ),
    )
    validate_object(dep)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(refs) == set(k8s.STORAGE_SECRET_KEYS)
    assert all(r["name"] == "churn-object-store" and r["optional"] for r in refs.values())
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert plain["CHURN_STORAGE_URL"] == "s3://bucket/churn"
    assert not any(k.startswith("AWS_") for k in plain)
    # without a Secret (local storage, or a workload identity) no reference is made
    no_secret, _ = _objects("3")
    (plain_container,) = no_secret["spec"]["template"]["spec"]["containers"]
    assert not any("valueFrom" in e for e in plain_container["env"])


def test_deployment_command_matches_the_model_server_cli() -> None:
    """The container's command line parses with the real ``python -m churn_platform.serving``."""
    serving_main = pytest.importorskip("churn_platform.serving.__main__")
    dep, _ = _objects("7")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"][3:] + container["args"] + ["--help"]
    with pytest.raises(SystemExit) as exit_info:
        serving_main.main(argv)  # argparse validates every option before --help exits
    assert exit_info.value.code == 0


@pytest.mark.parametrize("storage", ["file", "object store"])
def test_staging_and_production_pods_are_told_their_environment_and_log_apart(
    storage: str, tmp_path: Path
) -> None:
    """Issue #27: a pod is told its environment as the local target tells its servers
    (``--environment``), so the server it starts writes its inference log in that
    environment's own place: a staging pod never into production's log, the drift
    sensor's input, on a file or on the object store."""
    from churn_platform.serving import __main__ as serving_main
    from churn_platform.serving.inference_log import ObjectInferenceLog, default_inference_log_path
    from churn_platform.serving.server_settings import ServerSettings

    places = {}
    for environment in ("staging", "production"):
        dep, _ = _objects("4", environment)
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[args.index("--environment") + 1] == environment
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        # what the pod's server does with its command line: the CLI's own parser
        parsed = serving_main._parser().parse_args(container["command"][3:] + args)
        assert parsed.environment == environment
        settings = ServerSettings(home=tmp_path, environment=parsed.environment)
        if storage == "file":
            given = dataclasses.replace(settings, inference_log=Path(env["CHURN_INFERENCE_LOG"]))
            places[environment] = str(default_inference_log_path(parsed.version, given))
        else:  # batches on the object store, as open_inference_log opens them there
            # (a folder stands in for the bucket)
            log = ObjectInferenceLog(
                tmp_path / "bucket", parsed.version, environment=settings.environment
            )
            places[environment] = str(log.folder.relative_to(tmp_path / "bucket"))
            log.close()
    if storage == "file":
        assert places == {
            "production": "/tmp/inference_log/4.jsonl",
            "staging": "/tmp/inference_log/staging/4.jsonl",
        }
    else:
        assert places == {"production": "inference_log/4", "staging": "inference_log/staging/4"}


def test_deployment_meets_pod_security_restricted_and_has_a_startup_probe() -> None:
    """The checks of the Pod Security Standard "restricted" profile, one by one."""
    dep, _ = _objects("5")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("emptyDir" in v for v in pod["volumes"])
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["readOnlyRootFilesystem"] is True
        assert "privileged" not in sc
        assert c["startupProbe"]["httpGet"]["path"] == "/health"
        # the liveness probe must not kill a pod still loading its model
        assert "initialDelaySeconds" not in c["livenessProbe"]
        env = {e["name"]: e["value"] for e in c["env"]}
        # the root is read-only: every path the server writes is under the /tmp mount
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
        for var in ("HOME", "CHURN_HOME", "CHURN_INFERENCE_LOG"):
            assert (env[var] + "/").startswith("/tmp/"), var
        assert env["CHURN_INFERENCE_LOG"] == "/tmp/inference_log/5.jsonl"


def test_pod_disruption_budget_validates_and_selects_the_deployments_pods() -> None:
    dep, _ = _objects("6")
    pdb = k8s.pod_disruption_budget(
        name="churn-model-v6", namespace="churn-production", environment="production", version="6"
    )
    validate_object(pdb)
    assert pdb["metadata"]["name"] == dep["metadata"]["name"]
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_service_validates_and_selects_the_deployments_pods() -> None:
    dep, svc = _objects("4", "staging")
    validate_object(svc)
    assert svc["metadata"]["name"] == "churn-model-v4"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (port,) = svc["spec"]["ports"]
    assert port["port"] == k8s.SERVICE_PORT and port["targetPort"] == "http"


def test_http_route_validates_with_weighted_backends() -> None:
    route = k8s.http_route(
        name="churn-model",
        namespace="churn-production",
        environment="production",
        gateway_name="churn-gateway",
        gateway_namespace="churn-gateway",
        backends=[("churn-model-v1", 95), ("churn-model-v2", 5)],
        hostnames=["churn.example.com"],
        annotations={k8s.ANNOTATION_ZERO_WEIGHT_SINCE: "{}"},
    )
    validate_object(route)
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "churn-gateway",
            "namespace": "churn-gateway",
        }
    ]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["port"], r["weight"]) for r in refs] == [
        ("churn-model-v1", 80, 95),
        ("churn-model-v2", 80, 5),
    ]


def test_http_route_schema_rejects_what_the_gateway_api_rejects() -> None:
    route = k8s.http_route(
        name="r",
        namespace="n",
        environment="production",
        gateway_name="g",
        backends=[("churn-model-v1", 100)],
    )
    bad_weight = copy.deepcopy(route)
    bad_weight["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    typo = copy.deepcopy(route)
    typo["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 1
    for bad in (bad_weight, typo):
        with pytest.raises(jsonschema.ValidationError):
            validate_object(bad)


def test_http_route_with_a_request_mirror_validates_and_bad_mirrors_do_not() -> None:
    route = k8s.http_route(
        name="churn-model",
        namespace="churn-production",
        environment="production",
        gateway_name="churn-gateway",
        backends=[("churn-model-v1", 100), ("churn-model-v2", 0)],
        mirror=("churn-model-v2", 100),
    )
    validate_object(route)
    assert route["spec"]["rules"][0]["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"kind": "Service", "name": "churn-model-v2", "port": 80},
                "percent": 100,
            },
        }
    ]
    too_much = copy.deepcopy(route)
    too_much["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 101
    typo = copy.deepcopy(route)
    typo["spec"]["rules"][0]["filters"][0]["requestMirror"]["precent"] = 50
    no_ref = copy.deepcopy(route)
    del no_ref["spec"]["rules"][0]["filters"][0]["requestMirror"]["backendRef"]
    for bad in (too_much, typo, no_ref):
        with pytest.raises(jsonschema.ValidationError):
            validate_object(bad)
    with pytest.raises(ValueError, match="percent must be 1..100"):
        k8s.mirror_filter("churn-model-v2", 0)


def test_names_include_the_environment_only_when_asked() -> None:
    assert k8s.object_name("12") == "churn-model-v12"
    assert k8s.object_name("12", "staging") == "churn-model-staging-v12"
    assert k8s.route_name() == "churn-model"
    assert k8s.route_name("staging") == "churn-model-staging"


@pytest.mark.parametrize("version", ["", "V3", "3.1", "a_b", "-3", "x" * 41])
def test_versions_that_cannot_name_objects_are_refused_with_the_value(version: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(version))):
        k8s.object_name(version)


def test_builders_refuse_bad_inputs_naming_the_object() -> None:
    with pytest.raises(ValueError, match="HTTPRoute n/r: weight for s must be an int >= 0"):
        k8s.http_route(
            name="r", namespace="n", environment="e", gateway_name="g", backends=[("s", -5)]
        )
    with pytest.raises(ValueError, match="Gateway API allows 16"):
        k8s.http_route(
            name="r",
            namespace="n",
            environment="e",
            gateway_name="g",
            backends=[(f"s{i}", 0) for i in range(17)],
        )
    with pytest.raises(ValueError, match="image"):
        k8s.ServingSpec(image="", tracking_uri="x")
    with pytest.raises(ValueError, match="Deployment n/d: model_uri is empty"):
        k8s.deployment(
            name="d", namespace="n", environment="e", version="1", model_uri="", spec=_spec()
        )
    with pytest.raises(ValueError, match="environment 'Prod'"):
        k8s.selector_labels("1", "Prod", "churn_model")


# -- deploy/ ---------------------------------------------------------------------------


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml"))


# Files under deploy/k8s that are not Kubernetes objects, and what checks them.
NOT_MANIFESTS = {
    "prometheus/prometheus.yml": "promtool check config (test_prometheus_config_passes_promtool)",
    "prometheus/churn-alerts.rules.yml": "promtool check rules",
    "prometheus/churn-alerts.test.yml": "promtool test rules",
    "alertmanager/alertmanager.yml": "amtool check-config (test_alertmanager.py)",
}


def test_every_manifest_in_deploy_k8s_validates() -> None:
    checked = []
    for path in _yaml_files(K8S_DIR):
        rel = path.relative_to(K8S_DIR).as_posix()
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, f"{rel} is empty"
        if rel in NOT_MANIFESTS:
            assert all("kind" not in d for d in docs), rel
            continue
        for doc in docs:
            where = f"{rel}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            if doc.get("kind") == "Kustomization":
                for res in doc.get("resources", []):
                    assert (path.parent / res).exists(), f"{where}: resource {res} missing"
                for gen in doc.get("configMapGenerator", []):
                    for f in gen.get("files", []):
                        assert (path.parent / f).exists(), f"{where}: file {f} missing"
                continue
            try:
                validate_object(doc)
            except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
                pytest.fail(f"{where} does not validate: {exc.message}")
            checked.append(where)
    kinds = {c.split(": ")[1].split()[0] for c in checked}
    assert {"Namespace", "Role", "RoleBinding", "Gateway", "HTTPRoute", "Deployment"} <= kinds


def test_reference_templates_equal_the_builders_output() -> None:
    """deploy/k8s/model-server and the route template are what the target really creates."""
    spec = k8s.ServingSpec(
        image="churn-model-server:0.1.0",
        tracking_uri="http://mlflow.churn-dagster.svc.cluster.local:5000",
    )
    common = dict(
        name="churn-model-v1",
        namespace="churn-production",
        environment="production",
        version="1",
        model_uri="models:/churn_model/1",
    )
    shipped = list(yaml.safe_load_all((K8S_DIR / "model-server/churn-model-v1.yaml").read_text()))
    pdb = k8s.pod_disruption_budget(
        name="churn-model-v1", namespace="churn-production", environment="production", version="1"
    )
    assert shipped == [k8s.deployment(spec=spec, **common), k8s.service(**common), pdb]
    route = yaml.safe_load((K8S_DIR / "gateway/httproute-production.yaml").read_text())
    assert route == k8s.http_route(
        name="churn-model",
        namespace="churn-production",
        environment="production",
        gateway_name="churn-gateway",
        gateway_namespace="churn-gateway",
        backends=[("churn-model-v1", 100)],
    )


def test_alert_rule_uses_the_aggregated_error_rate() -> None:
    rules = yaml.safe_load((K8S_DIR / "prometheus/churn-alerts.rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["ChurnModelHighErrorRate"]["expr"] == ALERT_EXPR


requires_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)


@requires_promtool
def test_alert_rule_passes_promtool_and_its_unit_test() -> None:
    folder = K8S_DIR / "prometheus"
    for argv in (
        ["promtool", "check", "rules", "churn-alerts.rules.yml"],
        ["promtool", "test", "rules", "churn-alerts.test.yml"],
    ):
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"


@requires_promtool
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """Checked with the Kubernetes discovery swapped for a static target.

    Debian's promtool is built without Kubernetes service discovery, so it cannot parse
    ``kubernetes_sd_configs``; everything else (relabelling regexes, rule files) is checked.
    """
    folder = K8S_DIR / "prometheus"
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"churn-model-servers", "churn-exporter"}
    job = jobs["churn-model-servers"]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    assert set(job["kubernetes_sd_configs"][0]["namespaces"]["names"]) == {
        "churn-staging",
        "churn-production",
    }
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(folder / "churn-alerts.rules.yml", tmp_path)
    done = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Keys of Dagster's chart (helm/dagster, values schema of 1.13.x) that the values file
# may use: dotted paths, "[]" for list items. Taken from the chart's pydantic schema
# (helm/dagster/schema/schema/charts/...).
DAGSTER_CHART_KEYS = {
    "concurrency",
    "concurrency.runs",
    "concurrency.runs.tagConcurrencyLimits",
    *(f"concurrency.runs.tagConcurrencyLimits[].{k}" for k in ("key", "value", "limit")),
    "concurrency.pools",
    "concurrency.pools.defaultLimit",
    "dagsterDaemon",
    "dagsterDaemon.runMonitoring",
    *(
        f"dagsterDaemon.runMonitoring.{k}"
        for k in (
            "enabled",
            "startTimeoutSeconds",
            "pollIntervalSeconds",
            "freeSlotsAfterRunEndSeconds",
        )
    ),
    "global",
    "global.serviceAccountName",
    "global.postgresqlSecretName",
    "global.dagsterHome",
    "serviceAccount",
    "serviceAccount.create",
    "serviceAccount.name",
    "serviceAccount.annotations",
    "telemetry",
    "telemetry.enabled",
    "postgresql",
    "postgresql.enabled",
    "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername",
    "postgresql.postgresqlPassword",
    "postgresql.postgresqlDatabase",
    "postgresql.postgresqlParams",
    "postgresql.service",
    "postgresql.service.port",
    "generatePostgresqlPasswordSecret",
    "runLauncher",
    "runLauncher.type",
    "runLauncher.config",
    "runLauncher.config.k8sRunLauncher",
    *(
        f"runLauncher.config.k8sRunLauncher.{k}"
        for k in (
            "image",
            "imagePullPolicy",
            "jobNamespace",
            "loadInclusterConfig",
            "kubeconfigFile",
            "envConfigMaps",
            "envSecrets",
            "envVars",
            "volumeMounts",
            "volumes",
            "labels",
            "failPodOnRunFailure",
            "resources",
            "schedulerName",
            "securityContext",
            "runK8sConfig",
        )
    ),
    "dagster-user-deployments",
    "dagster-user-deployments.enabled",
    "dagster-user-deployments.enableSubchart",
    "dagster-user-deployments.imagePullSecrets",
    "dagster-user-deployments.deployments",
    *(
        f"dagster-user-deployments.deployments[].{k}"
        for k in (
            "name",
            "image",
            "image.repository",
            "image.tag",
            "image.pullPolicy",
            "dagsterApiGrpcArgs",
            "codeServerArgs",
            "includeConfigInLaunchedRuns",
            "includeConfigInLaunchedRuns.enabled",
            "deploymentNamespace",
            "port",
            "replicaCount",
            "env",
            "envConfigMaps",
            "envSecrets",
            "envSecrets[].name",
            "annotations",
            "nodeSelector",
            "affinity",
            "tolerations",
            "podSecurityContext",
            "securityContext",
            "resources",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "labels",
            "volumeMounts",
            "volumes",
        )
    ),
}
# Below these keys the chart takes free-form Kubernetes or env structures.
FREE_FORM = (
    "runLauncher.config.k8sRunLauncher.runK8sConfig",
    "dagster-user-deployments.deployments[].env",
    "dagster-user-deployments.deployments[].volumes",
    "dagster-user-deployments.deployments[].volumeMounts",
    "dagster-user-deployments.deployments[].resources",
    "runLauncher.config.k8sRunLauncher.envVars",
)


def _key_paths(node: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if any(prefix == f for f in FREE_FORM):
        return paths
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= _key_paths(value, path)
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for item in node:
            paths |= _key_paths(item, f"{prefix}[]")
    return paths


def test_helm_values_use_only_dagster_chart_keys() -> None:
    values = yaml.safe_load((DEPLOY / "helm/dagster-values.yaml").read_text())
    unknown = sorted(_key_paths(values) - DAGSTER_CHART_KEYS)
    assert not unknown, f"keys not in Dagster's chart values schema: {unknown}"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is True
    (location,) = values["dagster-user-deployments"]["deployments"]
    assert location["image"]["repository"] == "churn-code-location"
    assert location["dagsterApiGrpcArgs"] == ["--module-name", "churn_platform.definitions"]
    assert location["env"]["CHURN_ENV"] == "kubernetes"
    assert location["env"]["MLFLOW_TRACKING_URI"].startswith("http")
    assert location["includeConfigInLaunchedRuns"]["enabled"] is True
    assert values["serviceAccount"]["name"] == "churn-dagster"
    # the service account the chart creates is the one rbac.yaml grants the target's rights to
    bindings = [
        d
        for d in yaml.safe_load_all((K8S_DIR / "rbac.yaml").read_text())
        if d and d["kind"] == "RoleBinding"
    ]
    assert bindings and all(
        b["subjects"]
        == [{"kind": "ServiceAccount", "name": "churn-dagster", "namespace": "churn-dagster"}]
        for b in bindings
    )


@pytest.mark.parametrize("name", ["model-server", "code-location"])
def test_dockerfiles_install_the_project_with_its_constraints(name: str) -> None:
    text = (DEPLOY / "docker" / f"{name}.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "COPY constraints.txt" in text
    assert re.search(r"pip install --constraint constraints\.txt \.", text)
    assert re.search(r"^USER 10001", text, re.M)
    ignore = (DEPLOY / "docker" / f"{name}.Dockerfile.dockerignore").read_text()
    for needed in ("constraints.txt", "pyproject.toml", "churn_platform/"):
        assert f"!{needed}" in ignore


# -- training in its own pod ---------------------------------------------------------------


def test_training_pod_from_pipes_client_call_validates() -> None:
    """The PipesK8sClient call builds (with dagster-k8s's own builder) a valid Pod."""
    from dagster_k8s.pipes import build_pod_body

    from churn_platform.resources import k8s_training

    class RecordingClient:
        def run(self, **kwargs: object) -> dict:
            self.kwargs = kwargs
            return kwargs

    pipes = RecordingClient()
    k8s_training.run_training_in_pod(
        object(),
        pipes_client=pipes,
        image="churn-trainer:0.1.0",
        command=["python", "-m", "churn_trainer"],
        namespace="churn-dagster",
        env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
        cpu="2",
        memory="4Gi",
    )
    kw = pipes.kwargs
    pod = build_pod_body(
        "churn-training",
        kw["image"],
        kw["command"],
        kw["env"],
        None,
        kw["base_pod_spec"],
    )
    body = client_api_dict(pod)
    validate_object(body)
    (container,) = body["spec"]["containers"]
    assert container["image"] == "churn-trainer:0.1.0"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert body["spec"]["restartPolicy"] == "Never"
    tags = k8s_training.training_op_tags("4", "8Gi")["dagster-k8s/config"]
    assert tags["container_config"]["resources"]["requests"] == {"cpu": "4", "memory": "8Gi"}
    with pytest.raises(ValueError, match="needs the training image"):
        k8s_training.run_training_in_pod(object(), pipes_client=pipes, image="", command=["x"])


def client_api_dict(model: object) -> dict:
    """A kubernetes client model as the API's camelCase dict, with apiVersion and kind."""
    from kubernetes import client

    body = client.ApiClient().sanitize_for_serialization(model)
    return {"apiVersion": "v1", "kind": "Pod", **body}


def chart_instance_config(values: dict) -> dict:
    """The ``concurrency`` and ``run_monitoring`` blocks the Dagster chart renders into the
    instance's dagster.yaml from ``values`` (its ``_concurrency.tpl`` and the run-monitoring
    part of ``configmap-instance.yaml``, 1.13: camelCase keys to the instance's snake_case)."""
    concurrency = values.get("concurrency", {})
    runs, pools = concurrency.get("runs", {}), concurrency.get("pools", {})
    monitoring = values.get("dagsterDaemon", {}).get("runMonitoring", {})
    out: dict = {"telemetry": {"enabled": False}}
    block: dict = {}
    if "defaultLimit" in pools:
        block["pools"] = {"default_limit": pools["defaultLimit"]}
    if runs.get("tagConcurrencyLimits"):
        block["runs"] = {"tag_concurrency_limits": runs["tagConcurrencyLimits"]}
    if block:
        out["concurrency"] = block
    if monitoring.get("enabled"):
        out["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        }
    return out


def test_the_cluster_instance_keeps_one_deployment_at_a_time_like_the_local_one(tmp_path):
    """The chart's values give the cluster's Dagster instance the local instance's rule: the
    deployment pool's limit 1, one production release run at a time, and slots of dead runs
    freed by run monitoring (loaded in a real DagsterInstance, compared with the local one)."""
    import dagster as dg

    from churn_platform.defs.deployment import DEPLOYMENT_POOL

    values = yaml.safe_load((DEPLOY / "helm/dagster-values.yaml").read_text())
    # each instance writes its SQLite storage beside its dagster.yaml: both in tmp_path
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "dagster.yaml").write_text(
        yaml.safe_dump(chart_instance_config(values))
    )
    (tmp_path / "local").mkdir()
    shutil.copy(DEPLOY / "local" / "dagster.yaml", tmp_path / "local" / "dagster.yaml")
    cluster = dg.DagsterInstance.from_config(str(tmp_path / "cluster"))
    local = dg.DagsterInstance.from_config(str(tmp_path / "local"))
    try:
        ours, theirs = cluster.get_concurrency_config(), local.get_concurrency_config()
        assert ours.pool_config.default_pool_limit == theirs.pool_config.default_pool_limit == 1
        assert DEPLOYMENT_POOL == "churn_deployment"  # the pool both deployment assets share
        tags = ours.run_queue_config.tag_concurrency_limits
        assert tags == theirs.run_queue_config.tag_concurrency_limits
        assert {"key": "churn/deployment", "value": "production", "limit": 1} in tags
        assert cluster.run_monitoring_enabled
        assert (
            cluster.run_monitoring_settings["free_slots_after_run_end_seconds"]
            == (local.run_monitoring_settings["free_slots_after_run_end_seconds"])
        )
    finally:
        cluster.dispose()
        local.dispose()


def test_the_exporter_serves_the_router_gauges_where_the_cluster_prometheus_scrapes() -> None:
    """deploy/k8s/exporter: its command parses with the real CLI, its Service is the target
    of the Prometheus job churn-exporter, and the app it runs exports the weights of the
    route and the drift sensor's PSI (the series ChurnFeatureDrift and the panels read)."""
    from starlette.testclient import TestClient

    from churn_platform.core import drift
    from churn_platform.core.drift_monitor import psi_export
    from churn_platform.serving.exporter import exporter_app

    serving_main = pytest.importorskip("churn_platform.serving.__main__")
    dep, svc = yaml.safe_load_all((K8S_DIR / "exporter" / "deployment.yaml").read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    with pytest.raises(SystemExit) as exit_info:
        serving_main.main(container["command"][3:] + container["args"] + ["--help"])
    assert exit_info.value.code == 0
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "churn-dagster"  # reads routes
    config = yaml.safe_load((K8S_DIR / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "churn-exporter"]
    port = svc["spec"]["ports"][0]["port"]
    assert job["static_configs"][0]["targets"] == [f"churn-exporter.churn-dagster.svc:{port}"]
    assert container["ports"][0]["containerPort"] == port and f"{port}" in container["args"]

    result = drift.PsiResult(
        psi={"monthly_spend": 0.35},
        n_rows=500,
        max_feature="monthly_spend",
        max_psi=0.35,
        unseen_counts={},
        missing_counts={},
    )
    document = psi_export("3", {"source_snapshot": result}, 0.2, 1_700_000_000.0)

    def broken() -> dict[str, int]:
        raise ConnectionError("API down")

    text = (
        TestClient(exporter_app(lambda: {"3": 90, "4": 10}, lambda: document)).get("/metrics").text
    )
    assert 'churn_traffic_weight{model_version="4"} 10.0' in text
    assert (
        'churn_feature_psi{feature="monthly_spend",model_version="3",window="source_snapshot"} 0.35'
        in text
    )
    # the API down: no weights, the PSI still scraped
    text = TestClient(exporter_app(broken, lambda: document)).get("/metrics").text
    assert "churn_traffic_weight{" not in text and "churn_feature_psi{" in text
