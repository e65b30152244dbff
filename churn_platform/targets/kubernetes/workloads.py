"""The workload part of the Kubernetes target: a Deployment, Service and
PodDisruptionBudget per model version.

``Workloads`` creates or replaces a version's objects, waits for its pods the way
``kubectl rollout status`` does, scales and deletes. It never touches the HTTPRoute
(that is ``routes.Routes``), so it can be tested, and reasoned about, on its own.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from churn_platform.targets.kubernetes import objects as k8s
from churn_platform.targets.kubernetes.api import (
    KubeApi,
    KubernetesTargetError,
    Naming,
    as_error,
)

__all__ = ["Workloads", "rollout_status"]

log = logging.getLogger(__name__)


class Workloads:
    """Deployments, Services and PodDisruptionBudgets of model versions (see module docstring).

    spec: what every model-server pod looks like; ready_timeout_seconds: how long a wait
    for ready replicas lasts; poll_seconds: how often it reads the status meanwhile;
    clock is injected for tests (the waits sleep through ``api.sleep``).
    """

    def __init__(
        self,
        api: KubeApi,
        naming: Naming,
        spec: k8s.ServingSpec,
        *,
        ready_timeout_seconds: float = 600.0,
        poll_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.naming = naming
        self.spec = spec
        self.ready_timeout_seconds = ready_timeout_seconds
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._pdb_version: str | None = None

    def apply(self, environment: str, version: str, model_uri: str) -> None:
        """Create or replace ``version``'s Deployment, Service and PDB (no wait)."""
        api = self.api
        ns = self.naming.namespace_for(environment)
        name = self.naming.object_name(environment, version)
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
        api.apply(
            "Deployment",
            ns,
            name,
            create=lambda: api.apps.create_namespaced_deployment(ns, dep, **api.timeout()),
            read=lambda: api.apps.read_namespaced_deployment(name, ns, **api.timeout()),
            replace=lambda body: api.apps.replace_namespaced_deployment(
                name, ns, body, **api.timeout()
            ),
            desired=dep,
        )
        api.apply(
            "Service",
            ns,
            name,
            create=lambda: api.core.create_namespaced_service(ns, svc, **api.timeout()),
            read=lambda: api.core.read_namespaced_service(name, ns, **api.timeout()),
            replace=lambda body: api.core.replace_namespaced_service(
                name, ns, body, **api.timeout()
            ),
            desired=svc,
            keep_fields=_keep_service_ips,
        )
        self._apply_pdb(environment, version, ns, name)

    def _policy_version(self) -> str:
        """``v1`` where the API serves policy/v1 (Kubernetes 1.21+), else ``v1beta1``.

        The builder emits policy/v1; the v1beta1 PodDisruptionBudget has the same spec
        fields, so only ``apiVersion`` changes on an older API server.
        """
        if self._pdb_version is None:
            api = self.api
            groups = api.call(
                "APIGroup",
                "",
                "policy",
                "discover",
                lambda: client.ApisApi(api.api_client).get_api_versions(**api.timeout()),
            )
            served = {v.version for g in groups.groups if g.name == "policy" for v in g.versions}
            self._pdb_version = "v1" if "v1" in served else "v1beta1"
        return self._pdb_version

    def _apply_pdb(self, environment: str, version: str, ns: str, name: str) -> None:
        api = self.api
        pdb = k8s.pod_disruption_budget(
            name=name,
            namespace=ns,
            environment=environment,
            version=version,
            model_name=self.spec.model_name,
        )
        gv = self._policy_version()
        pdb["apiVersion"] = f"policy/{gv}"
        # Through the generic object API: the client has no PolicyV1beta1Api any more.
        where = ("policy", gv, ns, "poddisruptionbudgets")
        api.apply(
            "PodDisruptionBudget",
            ns,
            name,
            create=lambda: api.custom.create_namespaced_custom_object(*where, pdb, **api.timeout()),
            read=lambda: _with_metadata(
                api.custom.get_namespaced_custom_object(*where, name, **api.timeout())
            ),
            replace=lambda body: api.custom.replace_namespaced_custom_object(
                *where, name, body, **api.timeout()
            ),
            desired=pdb,
        )

    def ensure_serving(self, environment: str, version: str, action: str, *, pods: bool) -> None:
        """Raise unless ``version`` has its Service and Deployment; with ``pods``, also
        scale a scaled-down Deployment back up and wait until it is ready.

        Callers run this before they point traffic at ``version``, so a failure leaves
        the route as it was (the message says so).
        """
        ns = self.naming.namespace_for(environment)
        name = self.naming.object_name(environment, version)
        self._require_service(ns, name, version, action)
        dep = self.read(ns, name, f"{action} (version {version})")
        if dep is None:
            raise KubernetesTargetError(
                "Deployment",
                ns,
                name,
                action,
                f"does not exist: deploy version {version} first; the HTTPRoute "
                f"{ns}/{self.naming.route_name(environment)} was not changed",
                404,
            )
        if pods:
            if not dep.spec.replicas:
                self.scale(ns, name, self.spec.replicas)
            self.wait_ready(ns, name, action)

    def wait_ready(self, namespace: str, name: str, action: str) -> None:
        """Poll the Deployment's status until every wanted replica is updated and ready."""
        deadline = self._clock() + self.ready_timeout_seconds
        while True:
            dep = self.read(namespace, name, f"{action}: wait for ready")
            if dep is None:
                raise KubernetesTargetError(
                    "Deployment", namespace, name, action, "disappeared while waiting", 404
                )
            ready, detail = rollout_status(dep)
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
            self.api.sleep(self.poll_seconds)

    def read(self, namespace: str, name: str, action: str) -> Any | None:
        """The Deployment ``namespace/name``, or None when it does not exist."""
        api = self.api
        try:
            return api.call(
                "Deployment",
                namespace,
                name,
                action,
                lambda: api.apps.read_namespaced_deployment(name, namespace, **api.timeout()),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise as_error("Deployment", namespace, name, action, exc) from exc

    def list_deployments(self, environment: str) -> list[Any]:
        """Every Deployment of ours (this model, this environment); [] without the namespace."""
        api = self.api
        ns = self.naming.namespace_for(environment)
        selector = ",".join(
            [
                f"app.kubernetes.io/name={k8s.APP_NAME}",
                f"{k8s.LABEL_MANAGED_BY}={k8s.MANAGED_BY}",
                f"{k8s.LABEL_ENVIRONMENT}={environment}",
                f"{k8s.LABEL_MODEL_NAME}={self.spec.model_name}",
            ]
        )
        try:
            listed = api.call(
                "Deployment",
                ns,
                "*",
                "list",
                lambda: api.apps.list_namespaced_deployment(
                    ns, label_selector=selector, **api.timeout()
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise as_error("Deployment", ns, "*", "list", exc) from exc
        return list(listed.items)

    def deployments_by_version(self, environment: str) -> dict[str, Any]:
        """``list_deployments`` keyed by each Deployment's model-version label."""
        out: dict[str, Any] = {}
        for dep in self.list_deployments(environment):
            version = (dep.metadata.labels or {}).get(k8s.LABEL_MODEL_VERSION)
            if version:
                out[version] = dep
        return out

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set the Deployment's replicas (0: objects kept, no pods)."""
        api = self.api
        action = f"scale to {replicas}"
        try:
            api.call(
                "Deployment",
                namespace,
                name,
                action,
                lambda: api.apps.patch_namespaced_deployment(
                    name, namespace, {"spec": {"replicas": replicas}}, **api.timeout()
                ),
            )
        except ApiException as exc:
            raise as_error("Deployment", namespace, name, action, exc) from exc

    def delete(self, namespace: str, name: str) -> None:
        """Delete the Deployment, Service and PDB ``namespace/name`` (missing ones are fine)."""
        api = self.api
        pdb_where = ("policy", self._policy_version(), namespace, "poddisruptionbudgets")
        for kind, call in (
            (
                "Deployment",
                functools.partial(
                    api.apps.delete_namespaced_deployment, name, namespace, **api.timeout()
                ),
            ),
            (
                "Service",
                functools.partial(
                    api.core.delete_namespaced_service, name, namespace, **api.timeout()
                ),
            ),
            (
                "PodDisruptionBudget",
                functools.partial(
                    api.custom.delete_namespaced_custom_object,
                    *pdb_where,
                    name,
                    **api.timeout(),
                ),
            ),
        ):
            try:
                api.call(kind, namespace, name, "delete", call)
            except ApiException as exc:
                if exc.status != 404:
                    raise as_error(kind, namespace, name, "delete", exc) from exc

    def _require_service(self, namespace: str, name: str, version: str, action: str) -> None:
        api = self.api
        try:
            api.call(
                "Service",
                namespace,
                name,
                action,
                lambda: api.core.read_namespaced_service(name, namespace, **api.timeout()),
            )
        except ApiException as exc:
            if exc.status == 404:
                raise KubernetesTargetError(
                    "Service",
                    namespace,
                    name,
                    action,
                    f"does not exist, so the HTTPRoute must not point at it: deploy version "
                    f"{version} first; the route was not changed",
                    404,
                ) from exc
            raise as_error("Service", namespace, name, action, exc) from exc


def _with_metadata(obj: dict) -> Any:
    """A generic-API object (a dict) with the ``.metadata.resource_version`` apply reads."""
    return SimpleNamespace(
        metadata=SimpleNamespace(resource_version=obj["metadata"]["resourceVersion"])
    )


def _keep_service_ips(body: dict, current: Any) -> None:
    # clusterIP is immutable once allocated; a replace must carry it unchanged.
    body["spec"]["clusterIP"] = current.spec.cluster_ip
    if getattr(current.spec, "cluster_i_ps", None):
        body["spec"]["clusterIPs"] = current.spec.cluster_i_ps


def rollout_status(dep: Any) -> tuple[bool, str]:
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
