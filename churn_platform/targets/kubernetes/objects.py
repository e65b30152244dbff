"""Kubernetes objects for serving model versions, built as plain dicts.

One Deployment, Service and PodDisruptionBudget per model version, and one Gateway
API ``HTTPRoute`` per environment whose weighted ``backendRefs`` split the traffic
between them. The functions here only build dicts (the shape ``kubectl apply`` and the
API accept); the target in this package sends them. No ``kubernetes`` import here, so
the shapes are unit-tested offline against the API schemas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from churn_platform.serving.inference_log import inference_log_file

__all__ = [
    "APP_NAME",
    "HTTP_PORT",
    "LABEL_ENVIRONMENT",
    "LABEL_MANAGED_BY",
    "LABEL_MODEL_NAME",
    "LABEL_MODEL_VERSION",
    "MANAGED_BY",
    "ANNOTATION_MODEL_URI",
    "ANNOTATION_ZERO_WEIGHT_SINCE",
    "SERVER_COMMAND",
    "SERVICE_PORT",
    "ServingSpec",
    "deployment",
    "http_route",
    "object_name",
    "pod_disruption_budget",
    "route_name",
    "selector_labels",
    "server_args",
    "service",
    "validate_version",
    "writable_env",
]

APP_NAME = "churn-model"
LABEL_MODEL_NAME = "churn.platform/model-name"
LABEL_MODEL_VERSION = "churn.platform/model-version"
LABEL_ENVIRONMENT = "churn.platform/environment"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "churn-platform"
ANNOTATION_MODEL_URI = "churn.platform/model-uri"
# On the HTTPRoute: JSON {version: unix time} of when each referenced version dropped to
# 0% traffic, so the N-1 keep window survives restarts of whoever runs the cleanup.
ANNOTATION_ZERO_WEIGHT_SINCE = "churn.platform/zero-weight-since"

HTTP_PORT = 8080  # the model server's container port
SERVICE_PORT = 80  # the per-version Service's port, which the HTTPRoute targets

# A DNS-1123 label fragment: object names are "churn-model-v<version>", so a version
# must be lower-case alphanumerics and '-', and also be a valid label value.
_VERSION_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate_version(version: str) -> str:
    """Return ``version`` if it can name Kubernetes objects, else raise ``ValueError``."""
    if not isinstance(version, str) or not _VERSION_RE.match(version) or len(version) > 40:
        raise ValueError(
            f"model version {version!r} cannot name a Kubernetes object: use lower-case "
            "letters, digits and '-' (at most 40 characters), e.g. the registry version '3'"
        )
    return version


def object_name(version: str, environment: str | None = None) -> str:
    """``churn-model-v<version>``, or ``churn-model-<environment>-v<version>``.

    The environment is part of the name only when several environments share one
    namespace; with a namespace per environment the short name is used.
    """
    validate_version(version)
    if environment is None:
        return f"{APP_NAME}-v{version}"
    _check_dns_label("environment", environment)
    return f"{APP_NAME}-{environment}-v{version}"


def route_name(environment: str | None = None) -> str:
    """The HTTPRoute's name: ``churn-model`` (or ``churn-model-<environment>``)."""
    if environment is None:
        return APP_NAME
    _check_dns_label("environment", environment)
    return f"{APP_NAME}-{environment}"


# The image's entry point for one model version (see deploy/docker/model-server.Dockerfile).
SERVER_COMMAND = ["python", "-m", "churn_platform.serving", "model-server"]


# The pod's root filesystem is read-only and only /tmp (an emptyDir) is writable, so
# every path the server writes to is set explicitly under /tmp: the local defaults
# ("./data" under the working directory, $HOME caches) would be OSError: Read-only
# file system at start, i.e. a crash loop.
WRITABLE_DIR = "/tmp"


# the object-store credentials a model server may need (the usual AWS variables)
STORAGE_SECRET_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
)


def writable_env(version: str, environment: str) -> dict[str, str]:
    """Environment pointing everything the server writes at ``/tmp`` (the only writable path).

    The inference log file is ``environment``'s own, as on the local target
    (``/tmp/inference_log/<version>.jsonl`` in production, the drift sensor's place,
    ``/tmp/inference_log/<environment>/<version>.jsonl`` elsewhere).
    """
    log = inference_log_file(
        Path(WRITABLE_DIR) / "inference_log", validate_version(version), environment
    )
    return {
        "HOME": WRITABLE_DIR,
        "CHURN_HOME": f"{WRITABLE_DIR}/churn",
        "CHURN_INFERENCE_LOG": str(log),
    }


def server_args(
    model_uri: str, version: str, *, environment: str, port: int = HTTP_PORT
) -> list[str]:
    """Options for ``python -m churn_platform.serving model-server`` in the container.

    ``--environment`` tells the server where it runs, as the local target does: a staging
    server's inference log (a file, or batches on the object store) never lands in
    production's, which the drift sensor reads.
    """
    _check_dns_label("environment", environment)
    return [
        "--model-uri",
        model_uri,
        "--version",
        version,
        "--environment",
        environment,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--log-level",
        "info",
    ]


@dataclass(frozen=True)
class ServingSpec:
    """Everything about a model-server Deployment that is not the model version itself.

    image: the model-server image (``deploy/docker/model-server.Dockerfile``).
    tracking_uri: ``MLFLOW_TRACKING_URI`` inside the pod, where ``models:/`` URIs resolve.
    cpu_request/cpu_limit/memory_request/memory_limit: container resources.
    extra_env: more environment variables (e.g. S3 endpoint for MLflow artefacts).
    image_pull_policy: ``IfNotPresent`` by default; ``Always`` for mutable tags.
    service_account: the pod's service account ('' for the namespace default).
    storage_secret: a Secret whose AWS_* keys (each optional) the server reads to write its
    inference log to the object store ('' for none: local storage or a workload identity).
    """

    image: str
    tracking_uri: str
    model_name: str = "churn_model"
    replicas: int = 1
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""
    storage_secret: str = ""

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError("ServingSpec.image is empty; give the model-server image reference")
        if self.replicas < 0:
            raise ValueError(f"ServingSpec.replicas must be >= 0, got {self.replicas}")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(
                "ServingSpec.image_pull_policy must be Always, IfNotPresent or Never, "
                f"got {self.image_pull_policy!r}"
            )


def selector_labels(version: str, environment: str, model_name: str) -> dict[str, str]:
    """The labels that pick exactly one version's pods in one environment."""
    _check_dns_label("environment", environment)
    return {
        "app.kubernetes.io/name": APP_NAME,
        LABEL_MODEL_NAME: _label_value("model name", model_name),
        LABEL_MODEL_VERSION: validate_version(version),
        LABEL_ENVIRONMENT: environment,
    }


def _labels(version: str, environment: str, model_name: str, name: str) -> dict[str, str]:
    return {
        **selector_labels(version, environment, model_name),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def _container_env(version: str, model_uri: str, spec: ServingSpec, environment: str) -> list[dict]:
    """The model-server container's environment: store, model, writable paths, extras and
    the optional object-store credentials (each key optional in the Secret)."""
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": spec.tracking_uri},
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "MODEL_URI", "value": model_uri},
        {"name": "MODEL_VERSION", "value": version},
        *({"name": k, "value": v} for k, v in writable_env(version, environment).items()),
        *({"name": k, "value": str(v)} for k, v in sorted(spec.extra_env.items())),
        *(
            {
                "name": key,
                "valueFrom": {
                    "secretKeyRef": {"name": spec.storage_secret, "key": key, "optional": True}
                },
            }
            for key in (STORAGE_SECRET_KEYS if spec.storage_secret else ())
        ),
    ]


def _probe(period_seconds: int, failure_threshold: int) -> dict:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period_seconds,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _container(version: str, model_uri: str, spec: ServingSpec, environment: str) -> dict:
    """The model-server container: probes on ``/health``, resources, a read-only root."""
    return {
        "name": "model-server",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(SERVER_COMMAND),
        "args": server_args(model_uri, version, environment=environment),
        "env": _container_env(version, model_uri, spec, environment),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        # Liveness and readiness start only once this succeeds, so a slow model load
        # (artefacts downloaded from MLflow) is not killed by the liveness probe.
        "startupProbe": _probe(5, 60),
        "readinessProbe": _probe(5, 3),
        "livenessProbe": _probe(10, 3),
        "resources": {
            "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
            "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # MLflow downloads the model's artefacts under /tmp before loading them.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_spec(container: dict, spec: ServingSpec) -> dict:
    """The pod around ``container``, meeting Pod Security "restricted"."""
    pod_spec: dict = {
        "containers": [container],
        # Pod Security "restricted": non-root, RuntimeDefault seccomp (the container
        # repeats what the profile checks per container).
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
        "terminationGracePeriodSeconds": 30,
    }
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    return pod_spec


def deployment(
    *,
    name: str,
    namespace: str,
    environment: str,
    version: str,
    model_uri: str,
    spec: ServingSpec,
) -> dict:
    """The Deployment running one model version's server.

    Probes hit ``/health`` (the startup probe gives the model up to 5 minutes to load,
    then readiness gates traffic and liveness restarts a hung server);
    the pod carries ``prometheus.io/*`` annotations so Prometheus scrapes ``/metrics``;
    ``OMP_NUM_THREADS=1`` keeps BLAS from oversubscribing the CPU limit. The pod meets
    Pod Security "restricted" with a read-only root; ``writable_env`` puts every write
    under the ``/tmp`` emptyDir.
    """
    if not model_uri:
        raise ValueError(f"Deployment {namespace}/{name}: model_uri is empty")
    labels = _labels(version, environment, spec.model_name, name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_MODEL_URI: model_uri},
        },
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector_labels(version, environment, spec.model_name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                        ANNOTATION_MODEL_URI: model_uri,
                    },
                },
                "spec": _pod_spec(_container(version, model_uri, spec, environment), spec),
            },
        },
    }


def service(
    *,
    name: str,
    namespace: str,
    environment: str,
    version: str,
    model_uri: str,
    model_name: str = "churn_model",
) -> dict:
    """The ClusterIP Service in front of one version's pods (an HTTPRoute backend)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": _labels(version, environment, model_name, name),
            "annotations": {ANNOTATION_MODEL_URI: model_uri},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(version, environment, model_name),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def pod_disruption_budget(
    *,
    name: str,
    namespace: str,
    environment: str,
    version: str,
    model_name: str = "churn_model",
) -> dict:
    """A policy/v1 PodDisruptionBudget for one version's pods.

    ``maxUnavailable: 1``: a node drain evicts this version's pods one at a time, so a
    version with several replicas keeps serving through it, while a single-replica
    version never blocks the drain (``minAvailable: 1`` would, forever).
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": _labels(version, environment, model_name, name),
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(version, environment, model_name)},
        },
    }


def _check_backends(where: str, backends: Sequence[tuple[str, int]]) -> None:
    """Raise ``ValueError`` unless ``backends`` has 1..16 entries with int weights >= 0."""
    if not backends:
        raise ValueError(f"HTTPRoute {where}: needs at least one backend")
    if len(backends) > 16:
        raise ValueError(
            f"HTTPRoute {where}: {len(backends)} backends, Gateway API allows 16; "
            "retire old versions first"
        )
    for svc, weight in backends:
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(
                f"HTTPRoute {where}: weight for {svc} must be an int >= 0, got {weight!r}"
            )


def mirror_filter(service: str, percent: int) -> dict:
    """A Gateway API ``RequestMirror`` filter copying ``percent`` of the rule's requests to
    ``service`` (the answers of the copies are discarded by the Gateway)."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise ValueError(f"HTTPRoute mirror to {service}: percent must be 1..100, got {percent!r}")
    return {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"kind": "Service", "name": service, "port": SERVICE_PORT},
            "percent": percent,
        },
    }


def _route_spec(
    gateway_name: str,
    gateway_namespace: str | None,
    backends: Sequence[tuple[str, int]],
    hostnames: Sequence[str],
    mirror: tuple[str, int] | None = None,
) -> dict:
    """The HTTPRoute's ``spec``: one rule sending ``/`` to the weighted Services (and, with
    ``mirror`` = (Service, percent), a copy of that share of the requests to it)."""
    parent: dict = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway_name}
    if gateway_namespace:
        parent["namespace"] = gateway_namespace
    route_spec: dict = {
        "parentRefs": [parent],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        # group omitted: "" (core) is the Gateway API default, and some API
                        # servers' CRD validation rejects an explicit empty string.
                        "kind": "Service",
                        "name": svc,
                        "port": SERVICE_PORT,
                        "weight": weight,
                    }
                    for svc, weight in backends
                ],
            }
        ],
    }
    if mirror is not None:
        route_spec["rules"][0]["filters"] = [mirror_filter(*mirror)]
    if hostnames:
        route_spec["hostnames"] = list(hostnames)
    return route_spec


def http_route(
    *,
    name: str,
    namespace: str,
    environment: str,
    gateway_name: str,
    backends: Sequence[tuple[str, int]],
    gateway_namespace: str | None = None,
    hostnames: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
    mirror: tuple[str, int] | None = None,
) -> dict:
    """A Gateway API v1 HTTPRoute sending ``/`` to Services by weight.

    ``backends`` is ``[(service name, weight), ...]``; a weight of 0 keeps a Service
    referenced (ready for an instant rollback) without sending it traffic. ``mirror``
    (Service, percent) adds a ``RequestMirror`` filter: the shadow step's copies.
    """
    if not gateway_name:
        raise ValueError(f"HTTPRoute {namespace}/{name}: gateway_name is empty")
    _check_backends(f"{namespace}/{name}", backends)
    metadata: dict = {
        "name": name,
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/name": APP_NAME,
            LABEL_ENVIRONMENT: environment,
            LABEL_MANAGED_BY: MANAGED_BY,
        },
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": _route_spec(gateway_name, gateway_namespace, backends, hostnames, mirror),
    }


def _check_dns_label(what: str, value: str) -> None:
    if not isinstance(value, str) or not _DNS_LABEL_RE.match(value) or len(value) > 63:
        raise ValueError(
            f"{what} {value!r} cannot be used in Kubernetes names and labels: "
            "use lower-case letters, digits and '-'"
        )


def _label_value(what: str, value: str) -> str:
    if not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value) or len(value) > 63:
        raise ValueError(
            f"{what} {value!r} is not a valid Kubernetes label value "
            "(letters, digits, '-', '_', '.'; at most 63 characters)"
        )
    return value
