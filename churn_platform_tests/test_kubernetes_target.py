"""KubernetesTarget against a real kube-apiserver (built from Debian's source package).

What is real here: the API server (v1.20, etcd-backed) with RBAC, its validation
(422s), optimistic concurrency (409s), the Gateway API HTTPRoute served as a CRD with a
structural schema, and the official ``kubernetes`` Python client.

What is not: there is no kubelet, scheduler or controller manager, so no pod ever runs
and nothing writes a Deployment's status. The tests play that part with ``FakeKubelet``:
whenever the target waits (its injected ``sleep``), the fake kubelet writes each
Deployment's status subresource as a healthy rollout would (observedGeneration,
updated/ready/available replicas), except for Deployments it is told to hold back. No
Gateway controller runs either: the route's weights are checked as stored objects.

The canary tests drive the target through the shared controller,
``core.canary.run_canary``, with a scripted metrics source and a fake clock.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from churn_platform.core.canary import (
    CanaryConfig,
    CanaryState,
    Collaborators,
    Rollout,
    Transition,
    run_canary,
)
from churn_platform.core.rollout import DeploymentTarget, ErrorRate
from churn_platform.resources.deployment_target import KubernetesDeploymentResource
from churn_platform.targets.kubernetes import (
    GATEWAY_GROUP,
    HTTPROUTE_PLURAL,
    KubeApi,
    KubernetesSettings,
    KubernetesTarget,
    KubernetesTargetError,
    Naming,
    Routes,
    RouteState,
    Workloads,
)
from churn_platform.targets.kubernetes import objects as k8s
from churn_platform.targets.kubernetes.workloads import rollout_status
from churn_platform_tests.kube_apiserver import (
    KubeApiServer,
    missing_reason,
    running_kube_apiserver,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or ""),
]

REPO = Path(__file__).resolve().parent.parent
ENV = "production"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApiServer]:
    """etcd + kube-apiserver for this module (about 5 s to start)."""
    with running_kube_apiserver() as server:
        yield server


@pytest.fixture
def admin(kube: KubeApiServer) -> Iterator[client.ApiClient]:
    """An admin client, playing the other actors: kubelet, a second writer, the checker."""
    with kube.api_client() as api:
        yield api


class FakeClock:
    """Monotonic and wall clocks that move only when someone sleeps; sleeping runs the kubelet."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.kubelet = kubelet
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.wall += seconds
        self.kubelet.tick()


class FakeKubelet:
    """Writes Deployment status the way kubelet + deployment controller would (see module doc)."""

    def __init__(self, api: client.ApiClient, namespaces: list[str]) -> None:
        self.apps = client.AppsV1Api(api)
        self.namespaces = namespaces
        self.hold: set[str] = set()  # Deployment names whose pods never become ready
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        for ns in self.namespaces:
            for dep in self.apps.list_namespaced_deployment(ns).items:
                want = dep.spec.replicas or 0
                st = dep.status
                ready = 0 if dep.metadata.name in self.hold else want
                if (
                    (st.observed_generation or 0) == dep.metadata.generation
                    and (st.ready_replicas or 0) == ready
                    and (st.replicas or 0) == want
                ):
                    continue
                self.apps.patch_namespaced_deployment_status(
                    dep.metadata.name,
                    ns,
                    {
                        "status": {
                            "observedGeneration": dep.metadata.generation,
                            "replicas": want,
                            "updatedReplicas": want,
                            "readyReplicas": ready,
                            "availableReplicas": ready,
                            "unavailableReplicas": want - ready,
                        }
                    },
                )


class Cluster:
    """One test's namespaces, the fake kubelet and clock, and helpers to look at objects."""

    def __init__(self, kube: KubeApiServer, admin: client.ApiClient) -> None:
        self.kube = kube
        self.admin = admin
        self.prefix = f"t{secrets.token_hex(3)}"
        self.namespace_template = f"{self.prefix}-{{environment}}"
        self.ns = f"{self.prefix}-{ENV}"
        core = client.CoreV1Api(admin)
        for env in ("staging", ENV):
            core.create_namespace({"metadata": {"name": f"{self.prefix}-{env}"}})
        self.kubelet = FakeKubelet(admin, [f"{self.prefix}-staging", self.ns])
        self.clock = FakeClock(self.kubelet)
        self.apps = client.AppsV1Api(admin)
        self.core = core
        self.custom = client.CustomObjectsApi(admin)

    def target(self, api: client.ApiClient | None = None, **kw: Any) -> KubernetesTarget:
        """A KubernetesTarget on this test's namespaces with the fake clock."""
        options: dict[str, Any] = dict(
            namespace=self.namespace_template,
            image="churn-model-server:test",
            gateway_name="churn-gateway",
            gateway_namespace="churn-gateway",
            tracking_uri="http://mlflow.test:5000",
            ready_timeout_seconds=30,
            poll_seconds=1,
            keep_previous_seconds=600,
            endpoint="http://churn.example/{environment}",
        )
        options.update(kw)
        return KubernetesTarget(
            KubernetesSettings(**options),
            api or self.admin,
            sleep=self.clock.sleep,
            clock=self.clock,
            wall_clock=self.clock.wall_clock,
        )

    def route(self) -> dict:
        return self.custom.get_namespaced_custom_object(
            GATEWAY_GROUP, "v1", self.ns, HTTPROUTE_PLURAL, "churn-model"
        )

    def route_weights(self) -> dict[str, int]:
        """Service name -> weight, as stored in the HTTPRoute."""
        try:
            route = self.route()
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        refs = route["spec"]["rules"][0]["backendRefs"]
        return {r["name"]: r["weight"] for r in refs}

    def deployment(self, version: str) -> Any:
        return self.apps.read_namespaced_deployment(k8s.object_name(version), self.ns)

    def pdb(self, version: str) -> dict:
        """The version's PodDisruptionBudget (policy/v1beta1: the test server is 1.20)."""
        return self.custom.get_namespaced_custom_object(
            "policy", "v1beta1", self.ns, "poddisruptionbudgets", k8s.object_name(version)
        )

    def exists(self, kind: str, version: str) -> bool:
        read: Callable[[str, str], Any] = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "PodDisruptionBudget": lambda name, ns: self.pdb(version),
        }[kind]
        try:
            read(k8s.object_name(version), self.ns)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise


@pytest.fixture
def cluster(kube: KubeApiServer, admin: client.ApiClient) -> Cluster:
    return Cluster(kube, admin)


def _champion(cluster: Cluster, target: KubernetesTarget, version: str = "1") -> None:
    target.deploy(ENV, version, f"models:/churn_model/{version}")
    target.set_weights(ENV, {version: 100})


class ScriptedMetrics:
    """A MetricsSource whose error rate depends on the candidate's weight in the real route."""

    def __init__(
        self, cluster: Cluster, rate_at: Callable[[int], float], failing: str | None = None
    ) -> None:
        self.cluster = cluster
        self.rate_at = rate_at
        self.failing = failing  # only this version fails (None: every version)
        self.readings: list[ErrorRate] = []

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        weight = self.cluster.route_weights().get(k8s.object_name(version), 0)
        reading = ErrorRate(
            version=version,
            error_rate=self.rate_at(weight) if self.failing in (None, version) else 0.0,
            request_count=200.0,
            query=f"scripted (route weight {weight}%)",
        )
        self.readings.append(reading)
        return reading


CANARY = CanaryConfig(
    steps=(5, 25, 100),
    analysis_window_seconds=3.0,
    interval_seconds=1.0,
    max_error_rate=0.05,
    min_requests=20,
)


# -- deploy / state ----------------------------------------------------------------------


def test_target_satisfies_the_deployment_target_protocol(cluster: Cluster) -> None:
    assert isinstance(cluster.target(), DeploymentTarget)


def test_deploy_creates_objects_waits_for_ready_and_starts_at_zero(cluster: Cluster) -> None:
    """deploy() writes the builders' Deployment and Service and returns once status says ready."""
    target = cluster.target()
    served = target.deploy(ENV, "1", "models:/churn_model/1")

    assert cluster.kubelet.ticks >= 1  # it had to wait: nothing was ready at creation
    dep = cluster.deployment("1")
    assert dep.status.ready_replicas == 1
    labels = dep.metadata.labels
    assert labels[k8s.LABEL_MODEL_VERSION] == "1" and labels[k8s.LABEL_ENVIRONMENT] == ENV
    container = dep.spec.template.spec.containers[0]
    assert container.image == "churn-model-server:test"
    assert "models:/churn_model/1" in container.args
    svc = cluster.core.read_namespaced_service("churn-model-v1", cluster.ns)
    assert svc.spec.selector == dep.spec.selector.match_labels
    pdb = cluster.pdb("1")
    assert pdb["spec"]["selector"]["matchLabels"] == dep.spec.selector.match_labels
    assert pdb["spec"]["maxUnavailable"] == 1
    assert container.startup_probe.http_get.path == "/health"
    assert dep.spec.template.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert served.weight == 0
    assert served.url == f"http://churn-model-v1.{cluster.ns}.svc.cluster.local:80"
    assert cluster.route_weights() == {}  # deploy never touches the route

    state = target.set_weights(ENV, {"1": 100})
    assert cluster.route_weights() == {"churn-model-v1": 100}
    route = cluster.route()
    assert route["spec"]["parentRefs"][0]["name"] == "churn-gateway"
    assert state.weights() == {"1": 100}
    assert state.endpoint == "http://churn.example/production"
    assert state.versions[0].model_uri == "models:/churn_model/1"


def test_redeploying_a_version_replaces_it_in_place(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    before = cluster.deployment("1")
    ip_before = cluster.core.read_namespaced_service("churn-model-v1", cluster.ns).spec.cluster_ip
    cluster.target(image="churn-model-server:new").deploy(ENV, "1", "models:/churn_model/1")
    after = cluster.deployment("1")
    assert after.metadata.uid == before.metadata.uid
    assert after.spec.template.spec.containers[0].image == "churn-model-server:new"
    svc = cluster.core.read_namespaced_service("churn-model-v1", cluster.ns)
    assert svc.spec.cluster_ip == ip_before
    assert cluster.route_weights() == {"churn-model-v1": 100}


def test_deploy_timeout_names_the_deployment_and_leaves_the_route(cluster: Cluster) -> None:
    target = cluster.target(ready_timeout_seconds=5)
    _champion(cluster, target)
    cluster.kubelet.hold.add("churn-model-v2")
    with pytest.raises(KubernetesTargetError) as info:
        target.deploy(ENV, "2", "models:/churn_model/2")
    message = str(info.value)
    assert f"Deployment {cluster.ns}/churn-model-v2" in message
    assert "not ready after 5s" in message and "ready 0/1" in message
    assert cluster.route_weights() == {"churn-model-v1": 100}


# -- canary through core.canary.run_canary ------------------------------------------------


def _observe_route(cluster: Cluster, seen: list[dict[str, int]]) -> Callable[[Transition], None]:
    def on_transition(t: Transition) -> None:
        if t.to_state is CanaryState.PROGRESSING and t.reading is None:
            seen.append(cluster.route_weights())

    return on_transition


def test_healthy_canary_is_promoted_to_100_in_the_route(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    metrics = ScriptedMetrics(cluster, lambda weight: 0.01)
    seen: list[dict[str, int]] = []

    result = run_canary(
        Collaborators(target, metrics, sleep=cluster.clock.sleep, clock=cluster.clock),
        Rollout(ENV, "2", "1"),
        CANARY,
        on_transition=_observe_route(cluster, seen),
    )

    assert result.status is CanaryState.SUCCEEDED, result.reason
    # what the real route held at each step, read back from the API server
    assert seen == [
        {"churn-model-v1": 95, "churn-model-v2": 5},
        {"churn-model-v1": 75, "churn-model-v2": 25},
        {"churn-model-v1": 0, "churn-model-v2": 100},
    ]
    assert cluster.route_weights() == {"churn-model-v1": 0, "churn-model-v2": 100}
    assert target.state(ENV).weights() == {"1": 0, "2": 100}
    assert {r.query for r in metrics.readings} >= {"scripted (route weight 25%)"}


def test_breaching_canary_rolls_back_and_leaves_the_champion_untouched(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    champion_before = cluster.deployment("1")
    # the candidate fails, the champion does not: the canary is to blame (were both failing,
    # a shared dependency would be down and the release would abort instead)
    metrics = ScriptedMetrics(cluster, lambda weight: 0.30 if weight >= 25 else 0.0, failing="2")

    result = run_canary(
        Collaborators(target, metrics, sleep=cluster.clock.sleep, clock=cluster.clock),
        Rollout(ENV, "2", "1"),
        CANARY,
    )

    assert result.status is CanaryState.ROLLED_BACK
    assert result.breach is not None and result.breach.step == 25
    assert result.breach.reading is not None and result.breach.reading.error_rate == 0.30
    assert cluster.route_weights() == {"churn-model-v1": 100, "churn-model-v2": 0}
    champion_after = cluster.deployment("1")
    assert champion_after.metadata.resource_version == champion_before.metadata.resource_version
    assert champion_after.metadata.generation == champion_before.metadata.generation
    # the caller retires the candidate; the route then forgets it
    target.retire(ENV, "2")
    assert cluster.route_weights() == {"churn-model-v1": 100}
    assert not cluster.exists("Deployment", "2") and not cluster.exists("Service", "2")


def test_the_shadow_step_mirrors_through_the_route_and_a_failing_shadow_ends_before_5(
    cluster: Cluster,
) -> None:
    target = cluster.target()
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    filters: list[object] = []

    def on_transition(t: Transition) -> None:
        if t.to_state is CanaryState.SHADOWING:
            filters.append(cluster.route()["spec"]["rules"][0].get("filters"))

    # the candidate fails every copy it gets; no client is ever routed to it
    metrics = ScriptedMetrics(cluster, lambda weight: 1.0, failing="2")
    result = run_canary(
        Collaborators(target, metrics, sleep=cluster.clock.sleep, clock=cluster.clock),
        Rollout(ENV, "2", "1"),
        CANARY,
        on_transition=on_transition,
    )

    assert result.status is CanaryState.ROLLED_BACK, result.as_markdown()
    assert result.breach is not None and result.breach.step == 0
    # while the shadow ran, the real route held the mirror filter (read back from the API
    # server) and kept every client on the champion
    mirror = {"backendRef": {"kind": "Service", "name": "churn-model-v2", "port": 80}}
    assert filters and filters[-1] == [
        {"type": "RequestMirror", "requestMirror": {**mirror, "percent": 100}}
    ]
    assert all(t.weights.get("2", 0) == 0 for t in result.transitions)
    assert "filters" not in cluster.route()["spec"]["rules"][0]  # mirror off at the end
    assert cluster.route_weights() == {"churn-model-v1": 100}  # never a weighted backend
    assert target.shadow_observations(ENV) is None


def test_the_mirror_filter_survives_weight_changes_and_the_crd_checks_it(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    target.set_mirror(ENV, "2", 40)
    observed = target.shadow_observations(ENV)
    assert observed is not None and observed.version == "2" and not observed.scores_paired
    target.set_weights(ENV, {"1": 95, "2": 5})  # the route is rewritten, the mirror kept
    assert cluster.route()["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] == 40
    with pytest.raises(KubernetesTargetError, match=f"Service {cluster.ns}/churn-model-v9"):
        target.set_mirror(ENV, "9", 100)  # never deployed

    # the API server itself refuses a mirror percent over 100 (the CRD schema)
    route = cluster.route()
    route["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] = 150
    with pytest.raises(ApiException) as info:
        cluster.custom.replace_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", cluster.ns, "httproutes", "churn-model", route
        )
    assert info.value.status == 422 and "percent" in str(info.value.body)

    target.set_weights(ENV, {"1": 100})
    target.retire(ENV, "2")  # its version left the route: so did the mirror
    assert "filters" not in cluster.route()["spec"]["rules"][0]
    assert target.shadow_observations(ENV) is None


# -- API errors --------------------------------------------------------------------------


def test_concurrent_route_change_409_is_reread_and_retried(cluster: Cluster) -> None:
    """Another writer changes the route between the target's read and write: a real 409."""
    target = cluster.target()
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    real_replace = target.custom.replace_namespaced_custom_object
    interfered = []

    def replace_after_someone_else(*args: Any, **kwargs: Any) -> Any:
        if not interfered:
            route = cluster.route()
            route["metadata"].setdefault("labels", {})["team"] = "other-writer"
            cluster.custom.replace_namespaced_custom_object(
                GATEWAY_GROUP, "v1", cluster.ns, HTTPROUTE_PLURAL, "churn-model", route
            )
            interfered.append(True)
        return real_replace(*args, **kwargs)

    target.custom.replace_namespaced_custom_object = replace_after_someone_else  # type: ignore[method-assign]
    target.set_weights(ENV, {"1": 90, "2": 10})

    assert target.conflicts_retried == 1
    assert cluster.route_weights() == {"churn-model-v1": 90, "churn-model-v2": 10}
    assert cluster.route()["metadata"]["labels"]["team"] == "other-writer"  # not overwritten


def test_endless_conflicts_give_up_with_the_route_unchanged(cluster: Cluster) -> None:
    target = cluster.target(max_conflict_retries=3)
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    real_replace = target.custom.replace_namespaced_custom_object
    counter = iter(range(100))

    def always_beaten(*args: Any, **kwargs: Any) -> Any:
        route = cluster.route()
        route["metadata"].setdefault("annotations", {})["bump"] = str(next(counter))
        cluster.custom.replace_namespaced_custom_object(
            GATEWAY_GROUP, "v1", cluster.ns, HTTPROUTE_PLURAL, "churn-model", route
        )
        return real_replace(*args, **kwargs)

    target.custom.replace_namespaced_custom_object = always_beaten  # type: ignore[method-assign]
    with pytest.raises(KubernetesTargetError) as info:
        target.set_weights(ENV, {"1": 50, "2": 50})
    assert info.value.status == 409 and info.value.kind == "HTTPRoute"
    assert f"HTTPRoute {cluster.ns}/churn-model" in str(info.value)
    assert "still conflicting after 3 re-reads" in str(info.value)
    assert cluster.route_weights() == {"churn-model-v1": 100}


def test_invalid_deployment_422_names_the_object_and_the_reason(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    bad = cluster.target(cpu_request="2", cpu_limit="1")  # request above limit: API says no
    with pytest.raises(KubernetesTargetError) as info:
        bad.deploy(ENV, "3", "models:/churn_model/3")
    err = info.value
    assert err.status == 422
    assert (err.kind, err.namespace, err.name) == ("Deployment", cluster.ns, "churn-model-v3")
    assert f"Deployment {cluster.ns}/churn-model-v3: create failed (HTTP 422)" in str(err)
    assert "must be less than or equal to cpu limit" in str(err)
    assert not cluster.exists("Deployment", "3")
    assert cluster.route_weights() == {"churn-model-v1": 100}


def test_invalid_route_422_from_the_crd_schema_leaves_the_route(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    target.deploy(ENV, "2", "models:/churn_model/2")
    too_long = cluster.target(gateway_name="g" * 300)  # parentRefs[].name maxLength 253
    with pytest.raises(KubernetesTargetError) as info:
        too_long.set_weights(ENV, {"1": 95, "2": 5})
    err = info.value
    assert err.status == 422 and err.kind == "HTTPRoute" and err.name == "churn-model"
    assert "parentRefs" in err.reason
    assert cluster.route_weights() == {"churn-model-v1": 100}


def test_route_never_points_at_a_missing_service(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    with pytest.raises(KubernetesTargetError) as info:
        target.set_weights(ENV, {"1": 90, "9": 10})  # never deployed
    assert f"Service {cluster.ns}/churn-model-v9" in str(info.value)
    assert "does not exist" in str(info.value)

    target.deploy(ENV, "2", "models:/churn_model/2")
    cluster.core.delete_namespaced_service("churn-model-v2", cluster.ns)  # lost behind our back
    with pytest.raises(KubernetesTargetError, match=f"Service {cluster.ns}/churn-model-v2"):
        target.set_weights(ENV, {"1": 50, "2": 50})
    assert cluster.route_weights() == {"churn-model-v1": 100}


def test_weights_are_checked_before_anything_is_sent(cluster: Cluster) -> None:
    target = cluster.target()
    with pytest.raises(ValueError, match="sum to 90, not 100"):
        target.set_weights(ENV, {"1": 90})
    with pytest.raises(ValueError, match="weight of version '1' must be an int percent"):
        target.set_weights(ENV, {"1": 100.0})  # type: ignore[dict-item]


def test_transient_5xx_and_timeouts_are_retried_with_bounded_backoff(cluster: Cluster) -> None:
    target = cluster.target(backoff_seconds=0.5, max_backoff_seconds=1.0, max_attempts=4)
    _champion(cluster, target)
    real_get = target.custom.get_namespaced_custom_object
    failures: list[BaseException] = [
        ApiException(status=503, reason="Service Unavailable"),
        urllib3.exceptions.ReadTimeoutError(None, "/apis", "read timed out"),
        ApiException(status=500, reason="Internal Server Error"),
    ]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real_get(*args, **kwargs)

    target.custom.get_namespaced_custom_object = flaky  # type: ignore[method-assign]
    cluster.clock.sleeps.clear()
    assert target.state(ENV).weights() == {"1": 100}
    assert cluster.clock.sleeps == [0.5, 1.0, 1.0]  # doubling, capped

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=503, reason="Service Unavailable")

    target.custom.get_namespaced_custom_object = down  # type: ignore[method-assign]
    with pytest.raises(
        KubernetesTargetError, match="gave up after 4 attempts; last error HTTP 503"
    ):
        target.set_weights(ENV, {"1": 100})
    assert cluster.route_weights() == {"churn-model-v1": 100}


# -- retire and cleanup ------------------------------------------------------------------


def test_retire_refuses_a_version_that_still_has_traffic(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target)
    with pytest.raises(KubernetesTargetError, match="version 1 still carries 100% of the traffic"):
        target.retire(ENV, "1")
    assert cluster.exists("Deployment", "1")


def test_cleanup_keeps_n_minus_1_warm_scales_n_minus_2_and_deletes_older(
    cluster: Cluster,
) -> None:
    target = cluster.target(keep_previous_seconds=600)
    for version in ("1", "2", "3", "4", "5"):
        target.deploy(ENV, version, f"models:/churn_model/{version}")  # runs cleanup first
        target.set_weights(ENV, {version: 100})

    report = target.cleanup(ENV)
    assert report.champion == "5"
    assert cluster.route_weights() == {
        "churn-model-v3": 0,
        "churn-model-v4": 0,
        "churn-model-v5": 100,
    }
    assert [v for v in "12345" if cluster.exists("Deployment", v)] == ["3", "4", "5"]
    assert [v for v in "12345" if cluster.exists("Service", v)] == ["3", "4", "5"]
    assert [v for v in "12345" if cluster.exists("PodDisruptionBudget", v)] == ["3", "4", "5"]
    assert cluster.deployment("4").spec.replicas == 1  # N-1: warm for rollback
    assert cluster.deployment("3").spec.replicas == 0  # N-2: kept, no pods
    assert target.state(ENV).weights() == {"4": 0, "5": 100}

    cluster.clock.wall += 601  # the keep window passes
    report = target.cleanup(ENV)
    assert report.scaled_down == ["4"]
    assert cluster.deployment("4").spec.replicas == 0

    # rolling back to a scaled-down N-1 scales it up and waits before moving traffic
    target.set_weights(ENV, {"4": 100})
    assert cluster.deployment("4").spec.replicas == 1
    assert cluster.route_weights()["churn-model-v4"] == 100


# -- service account permissions and the Dagster resource --------------------------------


def test_deploy_rbac_role_grants_everything_the_target_needs(
    cluster: Cluster, kube: KubeApiServer
) -> None:
    """deploy/k8s/rbac.yaml's Role, bound in the test namespace, under RBAC authorisation."""
    rbac = client.RbacAuthorizationV1Api(cluster.admin)
    for doc in yaml.safe_load_all((REPO / "deploy/k8s/rbac.yaml").read_text()):
        if not doc or doc["metadata"]["namespace"] != "churn-production":
            continue
        doc["metadata"]["namespace"] = cluster.ns
        if doc["kind"] == "Role":
            rbac.create_namespaced_role(cluster.ns, doc)
        else:
            rbac.create_namespaced_role_binding(cluster.ns, doc)
    with kube.api_client(kube.deployer_token) as api:
        denied = client.CoreV1Api(api)
        with pytest.raises(ApiException) as info:
            denied.list_namespaced_secret(cluster.ns)
        assert info.value.status == 403  # RBAC is really on

        target = cluster.target(api)
        _champion(cluster, target, "1")
        target.deploy(ENV, "2", "models:/churn_model/2")
        target.set_weights(ENV, {"1": 0, "2": 100})
        target.deploy(ENV, "3", "models:/churn_model/3")
        target.set_weights(ENV, {"2": 0, "3": 100})
        target.deploy(ENV, "4", "models:/churn_model/4")
        target.set_weights(ENV, {"3": 0, "4": 100})
        target.cleanup(ENV)
        target.retire(ENV, "2")
        assert target.state(ENV).weights() == {"3": 0, "4": 100}


def test_dagster_resource_builds_a_working_target_from_a_kubeconfig(
    cluster: Cluster, kube: KubeApiServer, tmp_path: Path
) -> None:
    resource = KubernetesDeploymentResource(
        namespace=cluster.namespace_template,
        image="churn-model-server:test",
        gateway_name="churn-gateway",
        tracking_uri="http://mlflow.test:5000",
        kubeconfig=str(kube.kubeconfig(tmp_path / "kubeconfig")),
    )
    target = resource.target()
    assert target.state(ENV).versions == ()
    cluster.target().deploy(ENV, "1", "models:/churn_model/1")
    assert [v.version for v in target.state(ENV).versions] == ["1"]


def test_missing_namespace_is_reported_not_retried(cluster: Cluster) -> None:
    target = cluster.target(namespace="nowhere-{environment}")
    with pytest.raises(KubernetesTargetError) as info:
        target.deploy(ENV, "1", "models:/churn_model/1")
    assert info.value.status == 404
    assert "Deployment nowhere-production/churn-model-v1" in str(info.value)
    assert "namespace nowhere-production does not exist" in str(info.value)
    assert cluster.clock.sleeps == []


def test_certificate_errors_fail_at_once(
    cluster: Cluster, kube: KubeApiServer, tmp_path: Path
) -> None:
    """A wrong CA is configuration, not a transient error: no backoff loop."""
    other_ca = tmp_path / "other.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=other", "-keyout", str(tmp_path / "other.key"), "-out", str(other_ca)],
        check=True,
        capture_output=True,
    )
    cfg = kube.configuration()
    cfg.ssl_ca_cert = str(other_ca)
    cfg.retries = 0
    with client.ApiClient(cfg) as api:
        target = cluster.target(api)
        with pytest.raises(KubernetesTargetError, match="TLS error talking to the API"):
            target.state(ENV)
    assert cluster.clock.sleeps == []


# -- the two parts on their own ----------------------------------------------------------


def test_routes_part_alone_writes_weights_and_keeps_what_is_not_ours(cluster: Cluster) -> None:
    """Routes never looks at Deployments or Services: it only reads and writes the route."""
    naming = Naming(cluster.namespace_template)
    routes = Routes(KubeApi(cluster.admin), naming, gateway_name="churn-gateway")
    assert routes.read(ENV) == RouteState()  # no route yet

    routes.set_weights(ENV, {"1": 100}, now=10.0)
    route = cluster.route()
    route["spec"]["rules"][0]["backendRefs"].append({"name": "other-team", "port": 80, "weight": 0})
    route["metadata"]["labels"]["team"] = "other"
    cluster.custom.replace_namespaced_custom_object(
        GATEWAY_GROUP, "v1", cluster.ns, HTTPROUTE_PLURAL, "churn-model", route
    )

    routes.set_weights(ENV, {"2": 100}, now=20.0)
    state = routes.read(ENV)
    assert state.backends == {"1": 0, "2": 100}
    assert state.zero_since == {"1": 20.0}  # when 1 lost its traffic: the N-1 keep window
    assert [ref["name"] for ref in state.foreign] == ["other-team"]
    assert cluster.route()["metadata"]["labels"]["team"] == "other"

    with pytest.raises(KubernetesTargetError, match="version 2 still carries 100%"):
        routes.remove(ENV, "2")
    routes.remove(ENV, "1")
    assert cluster.route_weights() == {"churn-model-v2": 100, "other-team": 0}


def test_workloads_part_alone_applies_waits_scales_and_deletes(cluster: Cluster) -> None:
    """Workloads never touches the route; its waits run the fake kubelet."""
    api = KubeApi(cluster.admin, sleep=cluster.clock.sleep)
    spec = k8s.ServingSpec(image="churn-model-server:test", tracking_uri="http://mlflow.test:5000")
    workloads = Workloads(
        api, Naming(cluster.namespace_template), spec, ready_timeout_seconds=30, clock=cluster.clock
    )
    workloads.apply(ENV, "1", "models:/churn_model/1")
    ready, detail = rollout_status(cluster.deployment("1"))
    assert not ready and "ready 0/1" in detail  # nothing runs pods until the kubelet ticks

    workloads.ensure_serving(ENV, "1", "test", pods=True)
    assert rollout_status(cluster.deployment("1"))[0]
    workloads.scale(cluster.ns, "churn-model-v1", 0)
    assert list(workloads.deployments_by_version(ENV)) == ["1"]
    workloads.ensure_serving(ENV, "1", "test", pods=True)  # scaled back up and waited for
    assert cluster.deployment("1").spec.replicas == 1
    assert cluster.route_weights() == {}

    assert cluster.exists("PodDisruptionBudget", "1")
    workloads.apply(ENV, "1", "models:/churn_model/1")  # again: replaced in place
    workloads.delete(cluster.ns, "churn-model-v1")
    assert not cluster.exists("Deployment", "1") and not cluster.exists("Service", "1")
    assert not cluster.exists("PodDisruptionBudget", "1")
    with pytest.raises(KubernetesTargetError, match=f"Service {cluster.ns}/churn-model-v1"):
        workloads.ensure_serving(ENV, "1", "test", pods=False)


# -- restore -----------------------------------------------------------------------------


def _delete_route(cluster: Cluster) -> None:
    cluster.custom.delete_namespaced_custom_object(
        GATEWAY_GROUP, "v1", cluster.ns, HTTPROUTE_PLURAL, "churn-model"
    )


def test_restore_reapplies_deleted_objects_and_a_deleted_route(cluster: Cluster) -> None:
    target = cluster.target()
    _champion(cluster, target, "1")
    target.deploy(ENV, "2", "models:/churn_model/2")
    target.set_weights(ENV, {"1": 0, "2": 100})
    assert target.restore(ENV) == []  # nothing wrong: nothing done

    # someone deletes the champion's Deployment and Service, and scales v1 to 0 pods
    cluster.apps.delete_namespaced_deployment("churn-model-v2", cluster.ns)
    cluster.core.delete_namespaced_service("churn-model-v2", cluster.ns)
    cluster.apps.patch_namespaced_deployment(
        "churn-model-v1", cluster.ns, {"spec": {"replicas": 0}}
    )
    repairs = target.restore(ENV)
    assert any(
        "Deployment and Service" in line and "models:/churn_model/2" in line for line in repairs
    )
    assert cluster.exists("Deployment", "2") and cluster.exists("Service", "2")
    assert cluster.exists("PodDisruptionBudget", "2")
    assert cluster.deployment("2").status.ready_replicas == 1  # waited for its pods
    assert cluster.deployment("1").spec.replicas == 0  # 0% traffic: left as housekeeping made it
    assert cluster.route_weights() == {"churn-model-v1": 0, "churn-model-v2": 100}
    # the champion scaled to 0 pods while the route sends it everything
    scale_to_zero = {"spec": {"replicas": 0}}
    cluster.apps.patch_namespaced_deployment("churn-model-v2", cluster.ns, scale_to_zero)
    assert target.restore(ENV) == ["v2 of production carries traffic with 0 replicas; scaled up"]
    assert cluster.deployment("2").spec.replicas == 1

    # the route is gone too, and v1's objects: only the registry knows who is champion
    _delete_route(cluster)
    cluster.apps.delete_namespaced_deployment("churn-model-v1", cluster.ns)
    cluster.core.delete_namespaced_service("churn-model-v1", cluster.ns)
    without_registry = target.restore(ENV)
    assert without_registry == []  # the route named v1 and v2; with no route nothing is known
    repairs = target.restore(ENV, champion="2", keep=("1",))
    assert any("HTTPRoute" in line and "re-created" in line for line in repairs), repairs
    assert any(line.startswith("v1 of production: Deployment and Service") for line in repairs)
    assert cluster.route_weights() == {"churn-model-v1": 0, "churn-model-v2": 100}
    assert target.state(ENV).weights() == {"1": 0, "2": 100}
    assert target.restore(ENV, champion="2", keep=("1",)) == []


def test_restore_reports_a_version_it_cannot_bring_back_and_restores_the_others(
    cluster: Cluster,
) -> None:
    target = cluster.target()
    _champion(cluster, target, "1")
    target.deploy(ENV, "2", "models:/churn_model/2")
    target.set_weights(ENV, {"1": 100, "2": 0})
    cluster.apps.delete_namespaced_deployment("churn-model-v1", cluster.ns)
    cluster.kubelet.hold.add("churn-model-v1")  # its new pods never become ready
    cluster.core.delete_namespaced_service("churn-model-v2", cluster.ns)
    repairs = target.restore(ENV)
    assert len(repairs) == 3, repairs
    assert repairs[0].startswith(f"v1 of production: Deployment {cluster.ns}/churn-model-v1 was")
    assert "v1 of production could not be restored" in repairs[1]
    assert "not ready after" in repairs[1]
    assert repairs[2].startswith("v2 of production: Service ")
    assert cluster.exists("Service", "2")
    route = {"churn-model-v1": 100, "churn-model-v2": 0}
    assert cluster.route_weights() == route  # the route was not touched


def test_the_restore_command_on_kubernetes_uses_the_registry_aliases(
    cluster: Cluster, kube: KubeApiServer, tmp_path: Path
) -> None:
    import os
    import sys
    import threading

    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    registry.create_registered_model("churn_model")
    for version in ("1", "2"):
        registry.create_model_version("churn_model", source=str(tmp_path / f"m{version}"))
    registry.set_registered_model_alias("churn_model", "champion", "2")
    registry.set_registered_model_alias("churn_model", "previous", "1")
    target = cluster.target()
    _champion(cluster, target, "1")
    target.deploy(ENV, "2", "models:/churn_model/2")
    target.set_weights(ENV, {"1": 0, "2": 100})
    # a wiped namespace: every object and the route gone
    _delete_route(cluster)
    for version in ("1", "2"):
        cluster.apps.delete_namespaced_deployment(f"churn-model-v{version}", cluster.ns)
        cluster.core.delete_namespaced_service(f"churn-model-v{version}", cluster.ns)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    env |= {
        "CHURN_HOME": str(tmp_path / "home"),
        "CHURN_ENV": "kubernetes",
        "CHURN_K8S_NAMESPACE": cluster.namespace_template,
        "CHURN_MODEL_SERVER_IMAGE": "churn-model-server:test",
        "MLFLOW_TRACKING_URI": tracking,
        "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "churn_platform.serving", "restore", "--environment", ENV],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def kubelet() -> None:  # plays the kubelet until the command ends
        while proc.poll() is None:
            cluster.kubelet.tick()
            threading.Event().wait(0.2)

    playing = threading.Thread(target=kubelet, daemon=True)
    playing.start()
    out, _ = proc.communicate(timeout=600)
    playing.join()
    assert proc.returncode == 0, out
    assert "HTTPRoute" in out and "re-created" in out, out
    assert cluster.route_weights() == {"churn-model-v1": 0, "churn-model-v2": 100}
    assert cluster.deployment("2").status.ready_replicas == 1
    container = cluster.deployment("2").spec.template.spec.containers[0]
    assert container.image == "churn-model-server:test"
    assert "models:/churn_model/2" in container.args
