"""Talking to the Kubernetes API: bounded retries, create-or-replace, errors that name the object.

``KubeApi`` holds the three API groups the target uses and is shared by the workload
part and the route part, so both retry the same way and a test can reach one client
object to interfere with. Rules:

* 5xx, 429 and transport errors/timeouts are retried with exponential backoff, a bounded
  number of times;
* 404 and 409 reach the caller as ``ApiException`` (it decides: missing is often fine, a
  conflict means re-read and re-apply);
* 422 and every other client error, and TLS errors, are reported at once as
  ``KubernetesTargetError`` with the object's kind, namespace, name and the API server's
  reason.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from churn_platform.targets.kubernetes import objects as k8s

__all__ = ["KubeApi", "KubernetesTargetError", "Naming", "make_api_client", "version_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


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


def version_key(version: str) -> tuple[int, int, str]:
    """Registry versions are integers; order them numerically, anything else after."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def api_reason(exc: ApiException) -> str:
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


def as_error(
    kind: str, namespace: str, name: str, action: str, exc: ApiException
) -> KubernetesTargetError:
    """``exc`` as a ``KubernetesTargetError`` naming the object and the action."""
    return KubernetesTargetError(kind, namespace, name, action, api_reason(exc), exc.status)


def _is_tls_error(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", None)
    return isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError) or isinstance(
        reason, urllib3.exceptions.SSLError | ssl.SSLError
    )


def make_api_client(
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


@dataclass(frozen=True)
class Naming:
    """Where an environment's objects live and what they are called.

    ``namespace`` may contain ``{environment}`` (one namespace per environment); a fixed
    namespace shared by several environments puts the environment into object names
    (``churn-model-production-v3``) so they cannot collide.
    """

    namespace: str = "churn-{environment}"
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        if not self.namespace:
            raise ValueError("KubernetesTarget.namespace is empty; e.g. 'churn-{environment}'")

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

    def version_of(self, environment: str, service_name: str) -> str | None:
        """The version a Service name of ours stands for, None for anyone else's."""
        prefix = self.object_name(environment, "0")[:-1]  # "churn-model[-env]-v"
        if service_name.startswith(prefix):
            return service_name[len(prefix) :]
        return None

    def url(self, environment: str, version: str) -> str:
        """The in-cluster URL of ``version``'s Service."""
        ns = self.namespace_for(environment)
        name = self.object_name(environment, version)
        return f"http://{name}.{ns}.svc.{self.cluster_domain}:{k8s.SERVICE_PORT}"


class KubeApi:
    """The API groups the target uses, with bounded retries and create-or-replace.

    max_attempts / backoff_seconds / max_backoff_seconds: retries with exponential
    backoff for 5xx, 429, timeouts and connection errors; max_conflict_retries:
    re-read-and-retry rounds on 409 Conflict; sleep is injected for tests.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        request_timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        max_conflict_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1 or max_conflict_retries < 1:
            raise ValueError(
                "KubernetesTarget.max_attempts and max_conflict_retries must be >= 1, got "
                f"{max_attempts} and {max_conflict_retries}"
            )
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.request_timeout_seconds = request_timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_conflict_retries = max_conflict_retries
        self.sleep = sleep
        self.conflicts_retried = 0  # 409s answered by re-reading (visible to tests and logs)

    def timeout(self) -> dict[str, float]:
        """Keyword arguments giving one API call its request timeout."""
        return {"_request_timeout": self.request_timeout_seconds}

    def call(self, kind: str, namespace: str, name: str, action: str, fn: Callable[[], T]) -> T:
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
                if exc.status not in RETRYABLE_STATUS:
                    raise as_error(kind, namespace, name, action, exc) from exc
                problem = f"HTTP {exc.status}: {api_reason(exc)}"
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
            self.sleep(delay)

    def apply(
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
            self.call(kind, namespace, name, "create", create)
            return
        except ApiException as exc:
            if exc.status == 404:
                raise KubernetesTargetError(
                    kind,
                    namespace,
                    name,
                    "create",
                    f"namespace {namespace} does not exist ({api_reason(exc)}); create it "
                    "first (deploy/k8s/namespaces.yaml)",
                    404,
                ) from exc
            # 409 AlreadyExists: fall through to replace.
        for _ in range(self.max_conflict_retries):
            try:
                current = self.call(kind, namespace, name, "read", read)
            except ApiException as exc:
                if exc.status == 404:  # deleted meanwhile: create again
                    try:
                        self.call(kind, namespace, name, "create", create)
                        return
                    except ApiException as again:
                        if again.status != 409:
                            raise as_error(kind, namespace, name, "create", again) from again
                        continue
                raise as_error(kind, namespace, name, "read", exc) from exc
            body = json.loads(json.dumps(desired))
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            if keep_fields is not None:
                keep_fields(body, current)
            try:
                self.call(kind, namespace, name, "replace", functools.partial(replace, body))
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise as_error(kind, namespace, name, "replace", exc) from exc
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
