"""``KubernetesTarget``: the ``DeploymentTarget`` on Kubernetes, a workload part plus a route part.

One Deployment + Service per model version (``workloads.Workloads``) and a Gateway API
``HTTPRoute`` whose weighted ``backendRefs`` split the traffic (``routes.Routes``), both
talking through one ``api.KubeApi``. ``core.canary.run_canary`` drives it exactly as it
drives the local process target. The object shapes come from ``targets.kubernetes.objects``.

Safety rules, each tested against a real kube-apiserver:

* ``set_weights`` checks every Service (and Deployment) it is about to reference before
  it touches the route, and writes the route with its ``resourceVersion``: a concurrent
  change is a 409, answered by re-reading and re-applying, never by overwriting.
* A step that fails (not ready, invalid object, API down) raises before the route is
  changed, so the route keeps serving the champion.
* 5xx, 429 and transport errors/timeouts are retried with exponential backoff, a bounded
  number of times; 422 and other client errors are reported at once with the object's
  kind, namespace, name and the API server's reason.

Restore (``restore``): after objects were deleted by hand, a namespace was wiped or a cluster
rebuilt, every version the route references (and the registry's champion and previous, when
given) gets its Deployment, Service and PDB back from the model URI its surviving objects
record (else the registry's ``models:/<model>/<version>``); versions with traffic get ready
pods; a missing route is re-created with all traffic on the champion.

Housekeeping (``cleanup``): the champion N and the newest older version N-1 stay
referenced at 0% for instant rollback; N-1 keeps its pods for ``keep_previous_seconds``
after it lost its traffic, then is scaled to 0; N-2 is scaled to 0; anything older is
removed from the route and deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.rest import ApiException

from churn_platform.core.rollout import EnvironmentState, ServedVersion, ShadowObservations
from churn_platform.targets.kubernetes import objects as k8s
from churn_platform.targets.kubernetes.api import (
    KubeApi,
    KubernetesTargetError,
    Naming,
    as_error,
    make_api_client,
    version_key,
)
from churn_platform.targets.kubernetes.routes import Routes, check_weights
from churn_platform.targets.kubernetes.settings import KubernetesSettings
from churn_platform.targets.kubernetes.workloads import Workloads

__all__ = ["CleanupReport", "KubernetesTarget"]

log = logging.getLogger(__name__)


@dataclass
class CleanupReport:
    """What one ``cleanup`` pass did, per version."""

    champion: str | None = None
    kept: list[str] = field(default_factory=list)
    scaled_down: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


class KubernetesTarget:
    """``DeploymentTarget`` on Kubernetes (Deployments, Services, a Gateway API HTTPRoute).

    settings: a ``KubernetesSettings`` (image, store, namespace template, gateway, resources,
        timeouts and retry bounds; each field says what it means).
    api_client: a configured ``kubernetes.client.ApiClient``; None builds one from
        ``settings.kubeconfig`` / ``settings.in_cluster``.
    sleep, clock, wall_clock: injected for tests (waits, timeouts, the keep window).

    The parts are public: ``workloads`` (Deployments, Services), ``routes`` (the
    HTTPRoute) and ``api`` (the shared client with its retry rules).
    """

    def __init__(
        self,
        settings: KubernetesSettings,
        api_client: client.ApiClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        serving = settings.serving_spec()  # validates before any client is built
        naming = Naming(settings.namespace, settings.cluster_domain)
        if api_client is None:
            api_client = make_api_client(
                settings.kubeconfig or None, settings.kube_context or None, settings.in_cluster
            )
        self.settings = settings
        self.api = KubeApi(
            api_client,
            request_timeout_seconds=settings.request_timeout_seconds,
            max_attempts=settings.max_attempts,
            backoff_seconds=settings.backoff_seconds,
            max_backoff_seconds=settings.max_backoff_seconds,
            max_conflict_retries=settings.max_conflict_retries,
            sleep=sleep,
        )
        self.naming = naming
        self.workloads = Workloads(
            self.api,
            naming,
            serving,
            ready_timeout_seconds=settings.ready_timeout_seconds,
            poll_seconds=settings.poll_seconds,
            clock=clock,
        )
        self.routes = Routes(
            self.api,
            naming,
            gateway_name=settings.gateway_name,
            gateway_namespace=settings.gateway_namespace or None,
            hostnames=settings.hostnames,
        )
        self.endpoint = settings.endpoint or None
        self.keep_previous_seconds = settings.keep_previous_seconds
        self._wall_clock = wall_clock

    @property
    def custom(self) -> client.CustomObjectsApi:
        """The CustomObjectsApi both parts use (tests interfere through it)."""
        return self.api.custom

    @property
    def conflicts_retried(self) -> int:
        """409 Conflicts answered by re-reading, by either part."""
        return self.api.conflicts_retried

    # -- DeploymentTarget ----------------------------------------------------------

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        """Create or replace ``version``'s Deployment and Service; return once it is ready.

        The HTTPRoute is not touched: a new version starts at 0% (or keeps the weight it
        already had when re-deployed). Raises ``KubernetesTargetError`` naming the
        Deployment when it is invalid (422) or not ready within ``ready_timeout_seconds``.
        """
        k8s.validate_version(version)
        ns = self.naming.namespace_for(environment)
        name = self.naming.object_name(environment, version)
        try:
            self.cleanup(environment)
        except (KubernetesTargetError, ApiException) as exc:
            # Housekeeping must never block a deployment; it is retried on the next one.
            log.warning("cleanup before deploying %s/%s skipped: %s", ns, name, exc)
        self.workloads.apply(environment, version, model_uri)
        self.workloads.wait_ready(ns, name, "deploy")
        weight = self.routes.read(environment).backends.get(version, 0)
        log.info("deployed %s/%s (%s) at %d%%", ns, name, model_uri, weight)
        return ServedVersion(version, model_uri, self.naming.url(environment, version), weight)

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        """Point the HTTPRoute at the versions by ``weights`` (percent, summing to 100).

        Every version named must have its Service and Deployment; versions given traffic
        must have ready pods (a version scaled to 0 is scaled back up and waited for).
        All checks happen before the route is written, so on any failure the route keeps
        its previous weights. Versions the route references but ``weights`` omits go to
        0% and stay referenced (rollback targets) until ``retire`` or ``cleanup``.
        """
        check_weights(environment, weights)
        for version, weight in weights.items():
            k8s.validate_version(version)
            self.workloads.ensure_serving(environment, version, "set weights", pods=weight > 0)
        self.routes.set_weights(environment, weights, self._wall_clock())
        state = self.state(environment)
        log.info("%s weights now %s", self.naming.route_name(environment), state.weights())
        return state

    def state(self, environment: str) -> EnvironmentState:
        """Versions with pods wanted (replicas > 0) or traffic, with the route's weights."""
        backends = self.routes.read(environment).backends
        versions: dict[str, ServedVersion] = {}
        for version, dep in self.workloads.deployments_by_version(environment).items():
            weight = backends.get(version, 0)
            if not dep.spec.replicas and weight == 0:
                continue
            uri = (dep.metadata.annotations or {}).get(k8s.ANNOTATION_MODEL_URI, "")
            versions[version] = ServedVersion(
                version, uri, self.naming.url(environment, version), weight
            )
        for version, weight in backends.items():
            if version not in versions and weight > 0:
                # The route sends traffic to a version without a Deployment: show it, the
                # weights must add up to what users really get.
                url = self.naming.url(environment, version)
                versions[version] = ServedVersion(version, "", url, weight)
        ordered = tuple(versions[v] for v in sorted(versions, key=version_key))
        endpoint = self.endpoint.replace("{environment}", environment) if self.endpoint else None
        return EnvironmentState(environment=environment, endpoint=endpoint, versions=ordered)

    # -- shadow (ShadowTarget) -----------------------------------------------------

    def set_mirror(self, environment: str, version: str | None, percent: int = 100) -> None:
        """Add (or, with None, remove) the route's ``RequestMirror`` filter copying
        ``percent`` of the requests to ``version``'s Service; the weights stay as they are.
        ``version`` must have its Service and ready pods (``deploy`` did both)."""
        if version is not None:
            k8s.validate_version(version)
            self.workloads.ensure_serving(environment, version, "mirror", pods=True)
        self.routes.set_mirror(environment, version, percent)
        log.info("%s mirror now %s", self.naming.route_name(environment), version)

    def shadow_observations(self, environment: str) -> ShadowObservations | None:
        """What the Gateway lets us see of a mirror: only that it is on. The Gateway
        discards the copies' answers, so there are no paired scores
        (``scores_paired=False``): the shadow step judges the candidate on its own
        counters (error rate and p95 from the metrics source). None when not mirroring."""
        mirror = self.routes.read(environment).mirror
        if mirror is None:
            return None
        return ShadowObservations(mirror[0], 0, 0, scores_paired=False)

    def retire(self, environment: str, version: str) -> None:
        """Drop ``version`` from the route (it must be at 0%), then delete its objects."""
        k8s.validate_version(version)
        ns = self.naming.namespace_for(environment)
        self.routes.remove(environment, version)
        self.workloads.delete(ns, self.naming.object_name(environment, version))
        log.info("retired version %s from %s", version, ns)

    # -- restore -------------------------------------------------------------------

    def restore(
        self, environment: str, *, champion: str | None = None, keep: Sequence[str] = ()
    ) -> list[str]:
        """Re-apply what the route and the registry describe; return what was repaired.

        Every version the HTTPRoute references, ``champion`` and ``keep`` (e.g. the
        ``previous`` alias) must have a Deployment and a Service: missing ones are applied
        again (model URI from the Deployment's or Service's annotation, else
        ``models:/<model>/<version>``). Versions with traffic, and the champion, get ready
        pods (scaled back up if someone scaled them to 0). A missing route is re-created
        with 100% on ``champion`` and the ``keep`` versions at 0%; without a champion it is
        reported, since nothing records which version should serve. A version that cannot
        be restored is reported and the others still are. Nothing wrong: ``[]``.
        """
        route = self.routes.get(environment)
        backends = self.routes.parse(environment, route).backends
        wanted = {str(v) for v in (*backends, *keep)} | ({str(champion)} if champion else set())
        repairs: list[str] = []
        for version in sorted(wanted, key=version_key):
            serves = backends.get(version, 0) > 0 or (route is None and version == champion)
            try:
                self._restore_version(environment, version, serves, repairs)
            except KubernetesTargetError as exc:
                repairs.append(f"v{version} of {environment} could not be restored: {exc}")
        if route is None and champion:
            weights = {v: 0 for v in keep if v != champion} | {champion: 100}
            try:
                self.set_weights(environment, weights)
                repairs.append(
                    f"HTTPRoute {self.naming.namespace_for(environment)}/"
                    f"{self.naming.route_name(environment)} was missing; re-created with "
                    f"{weights}"
                )
            except KubernetesTargetError as exc:
                repairs.append(f"the HTTPRoute of {environment} could not be re-created: {exc}")
        elif route is None and wanted:
            repairs.append(
                f"no HTTPRoute in {environment} and no champion given: nothing routes traffic; "
                "restore with the registry's champion (python -m churn_platform.serving restore)"
            )
        if repairs:
            log.warning("restore %s: %s", environment, "; ".join(repairs))
        return repairs

    def _restore_version(
        self, environment: str, version: str, pods: bool, repairs: list[str]
    ) -> None:
        """Re-apply ``version``'s objects if any is missing; ready pods when ``pods``. Each
        repair is appended to ``repairs`` as it is done (a later step may raise)."""
        k8s.validate_version(version)
        ns = self.naming.namespace_for(environment)
        name = self.naming.object_name(environment, version)
        dep = self.workloads.read(ns, name, f"restore (version {version})")
        service = self._read_service(ns, name)
        missing = [kind for kind, obj in (("Deployment", dep), ("Service", service)) if obj is None]
        if missing:
            uri = self._model_uri(version, dep, service)
            self.workloads.apply(environment, version, uri)
            repairs.append(
                f"v{version} of {environment}: {' and '.join(missing)} {ns}/{name} "
                f"{'was' if len(missing) == 1 else 'were'} missing; re-applied from {uri}"
            )
        elif pods and dep is not None and not dep.spec.replicas:
            repairs.append(
                f"v{version} of {environment} carries traffic with 0 replicas; scaled up"
            )
        if pods:
            self.workloads.ensure_serving(environment, version, "restore", pods=True)

    def _read_service(self, namespace: str, name: str) -> object | None:
        api = self.api
        try:
            return api.call(
                "Service",
                namespace,
                name,
                "restore",
                lambda: api.core.read_namespaced_service(name, namespace, **api.timeout()),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise as_error("Service", namespace, name, "restore", exc) from exc

    def _model_uri(self, version: str, *objects: object | None) -> str:
        """The model URI a surviving object records, else the registry's URI of ``version``."""
        for obj in objects:
            metadata = getattr(obj, "metadata", None)
            uri = (getattr(metadata, "annotations", None) or {}).get(k8s.ANNOTATION_MODEL_URI)
            if uri:
                return str(uri)
        return f"models:/{self.workloads.spec.model_name}/{version}"

    # -- housekeeping --------------------------------------------------------------

    def cleanup(self, environment: str) -> CleanupReport:
        """Scale down and delete old versions behind the champion (see module docstring).

        The champion is the version with the most traffic. Versions newer than it at 0%
        (e.g. a rolled-back candidate) are left for the caller to ``retire``.
        """
        ns = self.naming.namespace_for(environment)
        report = CleanupReport()
        route = self.routes.read(environment)
        backends = route.backends
        if not backends or max(backends.values()) <= 0:
            return report
        champion = max(backends, key=lambda v: (backends[v], version_key(v)))
        report.champion = champion
        deployments = self.workloads.deployments_by_version(environment)
        older = sorted(
            (
                v
                for v in set(deployments) | set(backends)
                if version_key(v) < version_key(champion) and backends.get(v, 0) == 0
            ),
            key=version_key,
            reverse=True,
        )
        now = self._wall_clock()
        for position, version in enumerate(older):
            name = self.naming.object_name(environment, version)
            dep = deployments.get(version)
            if position == 0:  # N-1: warm for the keep window, then no pods
                since = route.zero_since.get(version)
                if since is None and version in backends:
                    self.routes.mark_zero_since(environment, version, now)
                    since = now
                expired = since is None or now - since >= self.keep_previous_seconds
                if dep is not None and dep.spec.replicas and expired:
                    self.workloads.scale(ns, name, 0)
                    report.scaled_down.append(version)
                else:
                    report.kept.append(version)
            elif position == 1:  # N-2: objects kept, no pods
                if dep is not None and dep.spec.replicas:
                    self.workloads.scale(ns, name, 0)
                    report.scaled_down.append(version)
                else:
                    report.kept.append(version)
            else:
                if version in backends:
                    self.retire(environment, version)
                else:
                    self.workloads.delete(ns, name)
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
