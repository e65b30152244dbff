"""The Kubernetes deployment target: one Deployment + Service per model version and a
Gateway API ``HTTPRoute`` whose weighted ``backendRefs`` split the traffic.

``KubernetesTarget`` implements ``core.rollout.DeploymentTarget`` with the official
``kubernetes`` client, so ``core.canary.run_canary`` drives it exactly as it drives the
local process target. The object shapes come from ``core.k8s_objects``.

Safety rules, each tested against a real kube-apiserver:

* ``set_weights`` checks every Service (and Deployment) it is about to reference before
  it touches the route, and writes the route with its ``resourceVersion``: a concurrent
  change is a 409, answered by re-reading and re-applying, never by overwriting.
* A step that fails (not ready, invalid object, API down) raises before the route is
  changed, so the route keeps serving the champion.
* 5xx, 429 and transport errors/timeouts are retried with exponential backoff, a bounded
  number of times; 422 and other client errors are reported at once with the object's
  kind, namespace, name and the API server's reason.

Housekeeping (``cleanup``): the champion N and the newest older version N-1 stay
referenced at 0% for instant rollback; N-1 keeps its pods for ``keep_previous_seconds``
after it lost its traffic, then is scaled to 0; N-2 is scaled to 0; anything older is
removed from the route and deleted.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dagster as dg
import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from churn_platform import settings
from churn_platform.core import k8s_objects as k8s
from churn_platform.core.rollout import EnvironmentState, ServedVersion
from churn_platform.resources.bases import DeploymentResource

__all__ = [
    "CleanupReport",
    "KubernetesDeploymentResource",
    "KubernetesTarget",
    "KubernetesTargetError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTE_PLURAL = "httproutes"
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class KubernetesTargetError(RuntimeError):
    """A Kubernetes step failed; names the object, the action and the reason."""

    def __init__(
        self,
        kind: str,
        namespace: str,
        name: str,
        action: str,
        reason: str,
        status: int | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.action = action
        self.reason = reason
        self.status = status
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{kind} {namespace}/{name}: {action} failed{code}: {reason}")


@dataclass
class CleanupReport:
    """What one ``cleanup`` pass did, per version."""

    champion: str | None = None
    kept: list[str] = field(default_factory=list)
    scaled_down: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _version_key(version: str) -> tuple[int, int, str]:
    """Registry versions are integers; order them numerically, anything else after."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _api_reason(exc: ApiException) -> str:
    """The API server's own message (``Status.message`` and causes) from an ApiException."""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        status = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return f"{exc.reason}: {str(body)[:500]}" if body else str(exc.reason)
    message = status.get("message") or exc.reason or "no message"
    causes = (status.get("details") or {}).get("causes") or []
    extra = "; ".join(
        f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
        for c in causes
        if c.get("message") and c.get("message") not in message
    )
    return f"{message}{'; ' + extra if extra else ''}"


class KubernetesTarget:
    """``DeploymentTarget`` on Kubernetes (Deployments, Services, a Gateway API HTTPRoute).

    api_client: a configured ``kubernetes.client.ApiClient``; or pass ``kubeconfig``
        (path, '' for the default file) / ``in_cluster=True`` to build one.
    namespace: where an environment's objects live. ``{environment}`` in it is replaced
        (default ``churn-{environment}``: one namespace per environment). A fixed
        namespace shared by several environments puts the environment into object
        names (``churn-model-production-v3``) so they cannot collide.
    image: the model-server image; gateway_name / gateway_namespace: the Gateway the
        HTTPRoute attaches to; tracking_uri: ``MLFLOW_TRACKING_URI`` inside the pods.
    endpoint: the URL users call per environment (``{environment}`` replaced), reported
        in ``EnvironmentState.endpoint``; hostnames: the route's hostnames.
    keep_previous_seconds: how long N-1 keeps its pods after losing its traffic.
    ready_timeout_seconds: how long ``deploy`` waits for ready replicas.
    max_attempts / backoff_seconds / max_backoff_seconds: bounded retries with
        exponential backoff for 5xx, 429, timeouts and connection errors.
    max_conflict_retries: re-read-and-retry rounds on 409 Conflict.
    sleep, clock, wall_clock: injected for tests (waits, timeouts, the keep window).
    """

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        kubeconfig: str | None = None,
        kube_context: str | None = None,
        in_cluster: bool = False,
        namespace: str = "churn-{environment}",
        image: str,
        gateway_name: str,
        gateway_namespace: str | None = None,
        tracking_uri: str,
        model_name: str = settings.MODEL_NAME,
        replicas: int = 1,
        cpu_request: str = "250m",
        cpu_limit: str = "1",
        memory_request: str = "512Mi",
        memory_limit: str = "1Gi",
        extra_env: Mapping[str, str] | None = None,
        image_pull_policy: str = "IfNotPresent",
        service_account: str = "",
        endpoint: str | None = None,
        hostnames: Sequence[str] = (),
        cluster_domain: str = "cluster.local",
        keep_previous_seconds: float = 3600.0,
        ready_timeout_seconds: float = 600.0,
        poll_seconds: float = 2.0,
        request_timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        max_conflict_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if api_client is None:
            api_client = _make_api_client(kubeconfig, kube_context, in_cluster)
        if not namespace:
            raise ValueError("KubernetesTarget.namespace is empty; e.g. 'churn-{environment}'")
        if max_attempts < 1 or max_conflict_retries < 1:
            raise ValueError(
                "KubernetesTarget.max_attempts and max_conflict_retries must be >= 1, got "
                f"{max_attempts} and {max_conflict_retries}"
            )
        if keep_previous_seconds < 0:
            raise ValueError(
                f"KubernetesTarget.keep_previous_seconds must be >= 0, got {keep_previous_seconds}"
            )
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.spec = k8s.ServingSpec(
            image=image,
            tracking_uri=tracking_uri,
            model_name=model_name,
            replicas=replicas,
            cpu_request=cpu_request,
            cpu_limit=cpu_limit,
            memory_request=memory_request,
            memory_limit=memory_limit,
            extra_env=dict(extra_env or {}),
            image_pull_policy=image_pull_policy,
            service_account=service_account,
        )
        self.gateway_name = gateway_name
        self.gateway_namespace = gateway_namespace
        self.endpoint = endpoint
        self.hostnames = tuple(hostnames)
        self.cluster_domain = cluster_domain
        self.keep_previous_seconds = keep_previous_seconds
        self.ready_timeout_seconds = ready_timeout_seconds
        self.poll_seconds = poll_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_conflict_retries = max_conflict_retries
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self.conflicts_retried = 0  # 409s answered by re-reading (visible to tests and logs)

    # -- naming --------------------------------------------------------------------

    def namespace_for(self, environment: str) -> str:
        """The namespace holding ``environment``'s objects."""
        return self.namespace.replace("{environment}", environment)

    def _shared_namespace(self) -> bool:
        return "{environment}" not in self.namespace

    def object_name(self, environment: str, version: str) -> str:
        """Deployment and Service name of ``version`` in ``environment``."""
        return k8s.object_name(version, environment if self._shared_namespace() else None)

    def route_name(self, environment: str) -> str:
        """The HTTPRoute's name in ``environment``."""
        return k8s.route_name(environment if self._shared_namespace() else None)

    def _version_of(self, environment: str, service_name: str) -> str | None:
        prefix = self.object_name(environment, "0")[:-1]  # "churn-model[-env]-v"
        if service_name.startswith(prefix):
            return service_name[len(prefix) :]
        return None

    def _url(self, namespace: str, name: str) -> str:
        return f"http://{name}.{namespace}.svc.{self.cluster_domain}:{k8s.SERVICE_PORT}"

    # -- DeploymentTarget ----------------------------------------------------------

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        """Create or replace ``version``'s Deployment and Service; return once it is ready.

        The HTTPRoute is not touched: a new version starts at 0% (or keeps the weight it
        already had when re-deployed). Raises ``KubernetesTargetError`` naming the
        Deployment when it is invalid (422) or not ready within ``ready_timeout_seconds``.
        """
        k8s.validate_version(version)
        ns = self.namespace_for(environment)
        name = self.object_name(environment, version)
        try:
            self.cleanup(environment)
        except (KubernetesTargetError, ApiException) as exc:
            # Housekeeping must never block a deployment; it is retried on the next one.
            log.warning("cleanup before deploying %s/%s skipped: %s", ns, name, exc)
        dep = k8s.deployment(
            name=name,
            namespace=ns,
            environment=environment,
            version=version,
            model_uri=model_uri,
            spec=self.spec,
        )
        svc = k8s.service(
            name=name,
            namespace=ns,
            environment=environment,
            version=version,
            model_uri=model_uri,
            model_name=self.spec.model_name,
        )
        self._apply(
            "Deployment",
            ns,
            name,
            create=lambda: self.apps.create_namespaced_deployment(ns, dep, **self._timeout()),
            read=lambda: self.apps.read_namespaced_deployment(name, ns, **self._timeout()),
            replace=lambda body: self.apps.replace_namespaced_deployment(
                name, ns, body, **self._timeout()
            ),
            desired=dep,
        )
        self._apply(
            "Service",
            ns,
            name,
            create=lambda: self.core.create_namespaced_service(ns, svc, **self._timeout()),
            read=lambda: self.core.read_namespaced_service(name, ns, **self._timeout()),
            replace=lambda body: self.core.replace_namespaced_service(
                name, ns, body, **self._timeout()
            ),
            desired=svc,
            keep_fields=_keep_service_ips,
        )
        self._wait_ready(ns, name, "deploy")
        weight = self._route_backends(environment).get(version, 0)
        log.info("deployed %s/%s (%s) at %d%%", ns, name, model_uri, weight)
        return ServedVersion(version, model_uri, self._url(ns, name), weight)

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        """Point the HTTPRoute at the versions by ``weights`` (percent, summing to 100).

        Every version named must have its Service and Deployment; versions given traffic
        must have ready pods (a version scaled to 0 is scaled back up and waited for).
        All checks happen before the route is written, so on any failure the route keeps
        its previous weights. Versions the route references but ``weights`` omits go to
        0% and stay referenced (rollback targets) until ``retire`` or ``cleanup``.
        """
        _check_weights(environment, weights)
        ns = self.namespace_for(environment)
        for version, weight in weights.items():
            k8s.validate_version(version)
            name = self.object_name(environment, version)
            self._require_service(ns, name, version)
            dep = self._read_deployment(ns, name, f"set weights (version {version})")
            if dep is None:
                raise KubernetesTargetError(
                    "Deployment",
                    ns,
                    name,
                    "set weights",
                    f"does not exist: deploy version {version} first; the HTTPRoute "
                    f"{ns}/{self.route_name(environment)} was not changed",
                    404,
                )
            if weight > 0:
                if not dep.spec.replicas:
                    self._scale(ns, name, self.spec.replicas)
                self._wait_ready(ns, name, "set weights")
        now = self._wall_clock()

        def apply(backends: dict[str, int], zero_since: dict[str, float]) -> None:
            for version in list(backends):
                backends[version] = 0
            backends.update(weights)
            for version, weight in backends.items():
                if weight > 0:
                    zero_since.pop(version, None)
                else:
                    zero_since.setdefault(version, now)

        self._update_route(environment, apply, "set weights")
        state = self.state(environment)
        log.info("%s weights now %s", self.route_name(environment), state.weights())
        return state

    def state(self, environment: str) -> EnvironmentState:
        """Versions with pods wanted (replicas > 0) or traffic, with the route's weights."""
        ns = self.namespace_for(environment)
        backends = self._route_backends(environment)
        deployments = self._list_deployments(environment)
        versions: dict[str, ServedVersion] = {}
        for dep in deployments:
            version = (dep.metadata.labels or {}).get(k8s.LABEL_MODEL_VERSION)
            if not version:
                continue
            weight = backends.get(version, 0)
            if not dep.spec.replicas and weight == 0:
                continue
            uri = (dep.metadata.annotations or {}).get(k8s.ANNOTATION_MODEL_URI, "")
            versions[version] = ServedVersion(
                version, uri, self._url(ns, dep.metadata.name), weight
            )
        for version, weight in backends.items():
            if version not in versions and weight > 0:
                # The route sends traffic to a version without a Deployment: show it, the
                # weights must add up to what users really get.
                name = self.object_name(environment, version)
                versions[version] = ServedVersion(version, "", self._url(ns, name), weight)
        ordered = tuple(versions[v] for v in sorted(versions, key=_version_key))
        endpoint = self.endpoint.replace("{environment}", environment) if self.endpoint else None
        return EnvironmentState(environment=environment, endpoint=endpoint, versions=ordered)

    def retire(self, environment: str, version: str) -> None:
        """Drop ``version`` from the route (it must be at 0%), then delete its objects."""
        k8s.validate_version(version)
        ns = self.namespace_for(environment)
        route = self.route_name(environment)

        def drop(backends: dict[str, int], zero_since: dict[str, float]) -> None:
            weight = backends.get(version, 0)
            if weight > 0:
                raise KubernetesTargetError(
                    "HTTPRoute",
                    ns,
                    route,
                    f"retire version {version}",
                    f"version {version} still carries {weight}% of the traffic; "
                    "set its weight to 0 first",
                )
            backends.pop(version, None)
            zero_since.pop(version, None)

        self._update_route(environment, drop, f"retire version {version}", create=False)
        self._delete(ns, self.object_name(environment, version))
        log.info("retired version %s from %s", version, ns)

    # -- housekeeping --------------------------------------------------------------

    def cleanup(self, environment: str) -> CleanupReport:
        """Scale down and delete old versions behind the champion (see module docstring).

        The champion is the version with the most traffic. Versions newer than it at 0%
        (e.g. a rolled-back candidate) are left for the caller to ``retire``.
        """
        ns = self.namespace_for(environment)
        report = CleanupReport()
        backends, zero_since = self._read_route_state(environment)
        if not backends or max(backends.values()) <= 0:
            return report
        champion = max(backends, key=lambda v: (backends[v], _version_key(v)))
        report.champion = champion
        deployments = {
            (d.metadata.labels or {}).get(k8s.LABEL_MODEL_VERSION): d
            for d in self._list_deployments(environment)
        }
        deployments.pop(None, None)
        older = sorted(
            (
                v
                for v in set(deployments) | set(backends)
                if v is not None
                and _version_key(v) < _version_key(champion)
                and backends.get(v, 0) == 0
            ),
            key=_version_key,
            reverse=True,
        )
        now = self._wall_clock()
        for position, version in enumerate(older):
            name = self.object_name(environment, version)
            dep = deployments.get(version)
            if position == 0:  # N-1: warm for the keep window, then no pods
                since = zero_since.get(version)
                if since is None and version in backends:
                    self._update_route(
                        environment,
                        lambda _b, z, v=version: z.setdefault(v, now),
                        "record N-1 keep window",
                        create=False,
                    )
                    since = now
                expired = since is None or now - since >= self.keep_previous_seconds
                if dep is not None and dep.spec.replicas and expired:
                    self._scale(ns, name, 0)
                    report.scaled_down.append(version)
                else:
                    report.kept.append(version)
            elif position == 1:  # N-2: objects kept, no pods
                if dep is not None and dep.spec.replicas:
                    self._scale(ns, name, 0)
                    report.scaled_down.append(version)
                else:
                    report.kept.append(version)
            else:
                if version in backends:
                    self.retire(environment, version)
                else:
                    self._delete(ns, name)
                report.deleted.append(version)
        if report.scaled_down or report.deleted:
            log.info(
                "cleanup %s: champion %s, scaled down %s, deleted %s",
                ns,
                champion,
                report.scaled_down,
                report.deleted,
            )
        return report

    # -- API plumbing --------------------------------------------------------------

    def _timeout(self) -> dict[str, float]:
        return {"_request_timeout": self.request_timeout_seconds}

    def _call(self, kind: str, namespace: str, name: str, action: str, fn: Callable[[], T]) -> T:
        """Run one API call, retrying 5xx/429/transport errors with bounded backoff.

        404 and 409 are raised as ``ApiException`` for the caller to handle; every other
        client error becomes ``KubernetesTargetError`` with the API server's reason.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except ApiException as exc:
                if exc.status in (404, 409):
                    raise
                if exc.status not in _RETRYABLE_STATUS:
                    raise KubernetesTargetError(
                        kind, namespace, name, action, _api_reason(exc), exc.status
                    ) from exc
                problem = f"HTTP {exc.status}: {_api_reason(exc)}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if _is_tls_error(exc):
                    # A certificate problem is configuration, not a transient failure.
                    raise KubernetesTargetError(
                        kind, namespace, name, action, f"TLS error talking to the API: {exc}"
                    ) from exc
                problem = f"{type(exc).__name__}: {exc}"
            if attempt >= self.max_attempts:
                raise KubernetesTargetError(
                    kind,
                    namespace,
                    name,
                    action,
                    f"gave up after {attempt} attempts; last error {problem}",
                )
            delay = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
            log.warning(
                "%s %s/%s: %s failed (%s); retry %d/%d in %.1fs",
                kind,
                namespace,
                name,
                action,
                problem,
                attempt,
                self.max_attempts - 1,
                delay,
            )
            self._sleep(delay)

    def _apply(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        create: Callable[[], Any],
        read: Callable[[], Any],
        replace: Callable[[dict], Any],
        desired: dict,
        keep_fields: Callable[[dict, Any], None] | None = None,
    ) -> None:
        """Create ``desired``, or replace the existing object at its resourceVersion."""
        try:
            self._call(kind, namespace, name, "create", create)
            return
        except ApiException as exc:
            if exc.status == 404:
                raise KubernetesTargetError(
                    kind,
                    namespace,
                    name,
                    "create",
                    f"namespace {namespace} does not exist ({_api_reason(exc)}); create it "
                    "first (deploy/k8s/namespace.yaml)",
                    404,
                ) from exc
            # 409 AlreadyExists: fall through to replace.
        for _ in range(self.max_conflict_retries):
            try:
                current = self._call(kind, namespace, name, "read", read)
            except ApiException as exc:
                if exc.status == 404:  # deleted meanwhile: create again
                    try:
                        self._call(kind, namespace, name, "create", create)
                        return
                    except ApiException as again:
                        if again.status != 409:
                            raise _as_error(kind, namespace, name, "create", again) from again
                        continue
                raise _as_error(kind, namespace, name, "read", exc) from exc
            body = json.loads(json.dumps(desired))
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            if keep_fields is not None:
                keep_fields(body, current)
            try:
                self._call(kind, namespace, name, "replace", lambda b=body: replace(b))
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise _as_error(kind, namespace, name, "replace", exc) from exc
                self.conflicts_retried += 1
        raise KubernetesTargetError(
            kind,
            namespace,
            name,
            "replace",
            f"still conflicting after {self.max_conflict_retries} re-reads "
            "(another writer keeps changing it)",
            409,
        )

    def _read_deployment(self, namespace: str, name: str, action: str) -> Any | None:
        try:
            return self._call(
                "Deployment",
                namespace,
                name,
                action,
                lambda: self.apps.read_namespaced_deployment(name, namespace, **self._timeout()),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _as_error("Deployment", namespace, name, action, exc) from exc

    def _require_service(self, namespace: str, name: str, version: str) -> None:
        try:
            self._call(
                "Service",
                namespace,
                name,
                "set weights",
                lambda: self.core.read_namespaced_service(name, namespace, **self._timeout()),
            )
        except ApiException as exc:
            if exc.status == 404:
                raise KubernetesTargetError(
                    "Service",
                    namespace,
                    name,
                    "set weights",
                    f"does not exist, so the HTTPRoute must not point at it: deploy version "
                    f"{version} first; the route was not changed",
                    404,
                ) from exc
            raise _as_error("Service", namespace, name, "set weights", exc) from exc

    def _list_deployments(self, environment: str) -> list[Any]:
        ns = self.namespace_for(environment)
        selector = ",".join(
            [
                f"app.kubernetes.io/name={k8s.APP_NAME}",
                f"{k8s.LABEL_MANAGED_BY}={k8s.MANAGED_BY}",
                f"{k8s.LABEL_ENVIRONMENT}={environment}",
                f"{k8s.LABEL_MODEL_NAME}={self.spec.model_name}",
            ]
        )
        try:
            listed = self._call(
                "Deployment",
                ns,
                "*",
                "list",
                lambda: self.apps.list_namespaced_deployment(
                    ns, label_selector=selector, **self._timeout()
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise _as_error("Deployment", ns, "*", "list", exc) from exc
        return list(listed.items)

    def _scale(self, namespace: str, name: str, replicas: int) -> None:
        try:
            self._call(
                "Deployment",
                namespace,
                name,
                f"scale to {replicas}",
                lambda: self.apps.patch_namespaced_deployment(
                    name, namespace, {"spec": {"replicas": replicas}}, **self._timeout()
                ),
            )
        except ApiException as exc:
            raise _as_error("Deployment", namespace, name, f"scale to {replicas}", exc) from exc

    def _delete(self, namespace: str, name: str) -> None:
        for kind, fn in (
            ("Deployment", self.apps.delete_namespaced_deployment),
            ("Service", self.core.delete_namespaced_service),
        ):
            try:
                self._call(
                    kind,
                    namespace,
                    name,
                    "delete",
                    lambda fn=fn: fn(name, namespace, **self._timeout()),
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise _as_error(kind, namespace, name, "delete", exc) from exc

    def _wait_ready(self, namespace: str, name: str, action: str) -> None:
        """Poll the Deployment's status until every wanted replica is updated and ready."""
        deadline = self._clock() + self.ready_timeout_seconds
        while True:
            dep = self._read_deployment(namespace, name, f"{action}: wait for ready")
            if dep is None:
                raise KubernetesTargetError(
                    "Deployment", namespace, name, action, "disappeared while waiting", 404
                )
            ready, detail = _rollout_status(dep)
            if ready:
                return
            if self._clock() >= deadline:
                raise KubernetesTargetError(
                    "Deployment",
                    namespace,
                    name,
                    f"{action}: wait for ready",
                    f"not ready after {self.ready_timeout_seconds:g}s: {detail}; "
                    "the HTTPRoute was not changed",
                )
            self._sleep(self.poll_seconds)

    # -- the HTTPRoute -------------------------------------------------------------

    def _get_route(self, environment: str) -> dict | None:
        ns = self.namespace_for(environment)
        name = self.route_name(environment)
        try:
            return self._call(
                "HTTPRoute",
                ns,
                name,
                "read",
                lambda: self.custom.get_namespaced_custom_object(
                    GATEWAY_GROUP,
                    GATEWAY_VERSION,
                    ns,
                    HTTPROUTE_PLURAL,
                    name,
                    **self._timeout(),
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _as_error("HTTPRoute", ns, name, "read", exc) from exc

    def _parse_route(
        self, environment: str, route: dict | None
    ) -> tuple[dict[str, int], dict[str, float], list[dict]]:
        """(version -> weight, version -> zero-weight-since, backends we do not own)."""
        backends: dict[str, int] = {}
        foreign: list[dict] = []
        if route is None:
            return backends, {}, foreign
        for rule in (route.get("spec") or {}).get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                version = self._version_of(environment, ref.get("name", ""))
                if version is None or ref.get("kind", "Service") != "Service":
                    foreign.append(ref)
                    continue
                backends[version] = backends.get(version, 0) + int(ref.get("weight", 1))
        raw = ((route.get("metadata") or {}).get("annotations") or {}).get(
            k8s.ANNOTATION_ZERO_WEIGHT_SINCE, "{}"
        )
        try:
            zero_since = {str(k): float(v) for k, v in json.loads(raw).items()}
        except (TypeError, ValueError, AttributeError):
            zero_since = {}
        return backends, zero_since, foreign

    def _route_backends(self, environment: str) -> dict[str, int]:
        return self._read_route_state(environment)[0]

    def _read_route_state(self, environment: str) -> tuple[dict[str, int], dict[str, float]]:
        backends, zero_since, _ = self._parse_route(environment, self._get_route(environment))
        return backends, zero_since

    def _update_route(
        self,
        environment: str,
        mutate: Callable[[dict[str, int], dict[str, float]], Any],
        action: str,
        *,
        create: bool = True,
    ) -> None:
        """Read the route, apply ``mutate`` to its weights, write it at that resourceVersion.

        A 409 means someone changed the route in between: re-read and re-apply (bounded).
        Labels and annotations others put on the route are preserved; its spec is ours.
        """
        ns = self.namespace_for(environment)
        name = self.route_name(environment)
        for _ in range(self.max_conflict_retries):
            current = self._get_route(environment)
            if current is None and not create:
                return
            backends, zero_since, foreign = self._parse_route(environment, current)
            mutate(backends, zero_since)
            zero_since = {v: t for v, t in zero_since.items() if v in backends}
            if not backends and not foreign:
                if current is not None:
                    self._delete_route(ns, name, current)
                return
            desired = k8s.http_route(
                name=name,
                namespace=ns,
                environment=environment,
                gateway_name=self.gateway_name,
                gateway_namespace=self.gateway_namespace,
                backends=[
                    (self.object_name(environment, v), w)
                    for v, w in sorted(backends.items(), key=lambda kv: _version_key(kv[0]))
                ],
                hostnames=self.hostnames,
                annotations={k8s.ANNOTATION_ZERO_WEIGHT_SINCE: json.dumps(zero_since)},
            )
            desired["spec"]["rules"][0]["backendRefs"].extend(foreign)
            try:
                if current is None:
                    self._call(
                        "HTTPRoute",
                        ns,
                        name,
                        action,
                        lambda d=desired: self.custom.create_namespaced_custom_object(
                            GATEWAY_GROUP,
                            GATEWAY_VERSION,
                            ns,
                            HTTPROUTE_PLURAL,
                            d,
                            **self._timeout(),
                        ),
                    )
                else:
                    body = dict(current)
                    meta = dict(current.get("metadata") or {})
                    meta["labels"] = {
                        **(meta.get("labels") or {}),
                        **desired["metadata"]["labels"],
                    }
                    meta["annotations"] = {
                        **(meta.get("annotations") or {}),
                        **desired["metadata"]["annotations"],
                    }
                    body["metadata"] = meta  # carries the resourceVersion we read
                    body["spec"] = desired["spec"]
                    self._call(
                        "HTTPRoute",
                        ns,
                        name,
                        action,
                        lambda b=body: self.custom.replace_namespaced_custom_object(
                            GATEWAY_GROUP,
                            GATEWAY_VERSION,
                            ns,
                            HTTPROUTE_PLURAL,
                            name,
                            b,
                            **self._timeout(),
                        ),
                    )
                return
            except ApiException as exc:
                if exc.status == 409:
                    self.conflicts_retried += 1
                    log.info("HTTPRoute %s/%s changed under us (409); re-reading", ns, name)
                    continue
                if exc.status == 404:
                    raise KubernetesTargetError(
                        "HTTPRoute",
                        ns,
                        name,
                        action,
                        f"{_api_reason(exc)} (is the Gateway API HTTPRoute CRD installed, "
                        f"and does namespace {ns} exist?)",
                        404,
                    ) from exc
                raise _as_error("HTTPRoute", ns, name, action, exc) from exc
        raise KubernetesTargetError(
            "HTTPRoute",
            ns,
            name,
            action,
            f"still conflicting after {self.max_conflict_retries} re-reads "
            "(another writer keeps changing it); weights unchanged",
            409,
        )

    def _delete_route(self, namespace: str, name: str, current: dict) -> None:
        preconditions = {
            "preconditions": {"resourceVersion": current["metadata"]["resourceVersion"]}
        }
        try:
            self._call(
                "HTTPRoute",
                namespace,
                name,
                "delete",
                lambda: self.custom.delete_namespaced_custom_object(
                    GATEWAY_GROUP,
                    GATEWAY_VERSION,
                    namespace,
                    HTTPROUTE_PLURAL,
                    name,
                    body=preconditions,
                    **self._timeout(),
                ),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise _as_error("HTTPRoute", namespace, name, "delete", exc) from exc


def _as_error(kind: str, namespace: str, name: str, action: str, exc: ApiException):
    return KubernetesTargetError(kind, namespace, name, action, _api_reason(exc), exc.status)


def _is_tls_error(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", None)
    return isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError) or isinstance(
        reason, urllib3.exceptions.SSLError | ssl.SSLError
    )


def _keep_service_ips(body: dict, current: Any) -> None:
    # clusterIP is immutable once allocated; a replace must carry it unchanged.
    body["spec"]["clusterIP"] = current.spec.cluster_ip
    if getattr(current.spec, "cluster_i_ps", None):
        body["spec"]["clusterIPs"] = current.spec.cluster_i_ps


def _rollout_status(dep: Any) -> tuple[bool, str]:
    """Like ``kubectl rollout status``: (done?, what is missing)."""
    want = dep.spec.replicas if dep.spec.replicas is not None else 1
    st = dep.status
    generation = dep.metadata.generation or 0
    observed = (st.observed_generation if st else None) or 0
    updated = (st.updated_replicas if st else None) or 0
    ready = (st.ready_replicas if st else None) or 0
    available = (st.available_replicas if st else None) or 0
    total = (st.replicas if st else None) or 0
    conditions = "; ".join(
        f"{c.type}={c.status} ({c.reason}: {c.message})"
        for c in ((st.conditions if st else None) or [])
    )
    detail = (
        f"observedGeneration {observed}/{generation}, updated {updated}/{want}, "
        f"ready {ready}/{want}, available {available}/{want}"
        + (f"; conditions: {conditions}" if conditions else "")
    )
    done = (
        observed >= generation
        and updated >= want
        and ready >= want
        and available >= want
        and total <= updated
    )
    return done, detail


def _check_weights(environment: str, weights: Mapping[str, int]) -> None:
    if not weights:
        raise ValueError(
            f"set_weights({environment!r}): weights are empty; give percent per version"
        )
    for version, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise ValueError(
                f"set_weights({environment!r}): weight of version {version!r} must be an int "
                f"percent in 0..100, got {weight!r}"
            )
    total = sum(weights.values())
    if total != 100:
        raise ValueError(
            f"set_weights({environment!r}): weights {dict(weights)} sum to {total}, not 100"
        )


def _make_api_client(
    kubeconfig: str | None, kube_context: str | None, in_cluster: bool
) -> client.ApiClient:
    """An ApiClient from the pod's service account, or from a kubeconfig file."""
    if in_cluster:
        cfg = client.Configuration()
        kube_config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return kube_config.new_client_from_config(
        config_file=kubeconfig or None, context=kube_context or None
    )


class KubernetesDeploymentResource(DeploymentResource):
    """The Kubernetes deployment target as a Dagster resource (``CHURN_ENV=kubernetes``).

    ``target()`` returns a ``KubernetesTarget``. In a Dagster run pod set
    ``in_cluster=True`` (the pod's service account needs get/list/create/update/patch/
    delete on deployments, services and httproutes in the serving namespaces; see
    ``deploy/k8s/rbac.yaml``); outside a cluster ``kubeconfig`` ('' = default file).
    """

    namespace: str = "churn-{environment}"
    image: str
    gateway_name: str = "churn-gateway"
    gateway_namespace: str = ""
    tracking_uri: str = ""
    kubeconfig: str = ""
    kube_context: str = ""
    in_cluster: bool = False
    replicas: int = 1
    keep_previous_seconds: float = 3600.0
    ready_timeout_seconds: float = 600.0
    endpoint: str = ""
    hostnames: list[str] = []
    image_pull_policy: str = "IfNotPresent"
    service_account: str = ""

    @classmethod
    def from_env(cls) -> KubernetesDeploymentResource:
        """The resource configured by the environment variables the Helm values set.

        ``CHURN_MODEL_SERVER_IMAGE`` (required, resolved at run time), ``CHURN_K8S_NAMESPACE``,
        ``CHURN_GATEWAY_NAME``, ``CHURN_GATEWAY_NAMESPACE``, ``MLFLOW_TRACKING_URI``; inside a
        pod (``KUBERNETES_SERVICE_HOST`` set) the in-cluster service account is used.
        """
        env = os.environ
        return cls(
            image=dg.EnvVar("CHURN_MODEL_SERVER_IMAGE"),
            namespace=env.get("CHURN_K8S_NAMESPACE", "churn-{environment}"),
            gateway_name=env.get("CHURN_GATEWAY_NAME", "churn-gateway"),
            gateway_namespace=env.get("CHURN_GATEWAY_NAMESPACE", ""),
            tracking_uri=env.get("MLFLOW_TRACKING_URI", ""),
            in_cluster=bool(env.get("KUBERNETES_SERVICE_HOST")),
        )

    def _tracking_uri(self) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            # The local SQLite default means nothing inside a pod: insist on a server URL.
            raise ValueError(
                "KubernetesDeploymentResource.tracking_uri is empty and MLFLOW_TRACKING_URI is "
                "unset; give the MLflow tracking server URL the model-server pods should use"
            )
        return uri

    def target(self) -> KubernetesTarget:
        """A ``KubernetesTarget`` configured from this resource's fields."""
        return KubernetesTarget(
            kubeconfig=self.kubeconfig or None,
            kube_context=self.kube_context or None,
            in_cluster=self.in_cluster,
            namespace=self.namespace,
            image=self.image,
            gateway_name=self.gateway_name,
            gateway_namespace=self.gateway_namespace or None,
            tracking_uri=self._tracking_uri(),
            replicas=self.replicas,
            keep_previous_seconds=self.keep_previous_seconds,
            ready_timeout_seconds=self.ready_timeout_seconds,
            endpoint=self.endpoint or None,
            hostnames=tuple(self.hostnames),
            image_pull_policy=self.image_pull_policy,
            service_account=self.service_account,
        )
