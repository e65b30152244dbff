"""The route part of the Kubernetes target: the Gateway API ``HTTPRoute`` and its weights.

``Routes`` reads an environment's route as version -> weight (plus when each version
went to 0%, kept in an annotation for the N-1 keep window) and writes it back with the
``resourceVersion`` it read: a concurrent change is a 409, answered by re-reading and
re-applying the same change, never by overwriting. Backends that are not ours (other
Services, other kinds) and labels/annotations others put on the route are preserved.
It never looks at Deployments or Services (that is ``workloads.Workloads``): callers
check those before they move weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from churn_platform.targets.kubernetes import objects as k8s
from churn_platform.targets.kubernetes.api import (
    KubeApi,
    KubernetesTargetError,
    Naming,
    api_reason,
    as_error,
    version_key,
)

__all__ = [
    "GATEWAY_GROUP",
    "GATEWAY_VERSION",
    "HTTPROUTE_PLURAL",
    "RouteState",
    "Routes",
    "check_weights",
]

log = logging.getLogger(__name__)

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTE_PLURAL = "httproutes"

# mutate(backends, zero_since) changes the two dicts in place
Mutation = Callable[[dict[str, int], dict[str, float]], Any]


@dataclass
class RouteState:
    """An environment's route as we read it: our versions' weights and 0%-since times."""

    backends: dict[str, int] = field(default_factory=dict)  # version -> weight
    zero_since: dict[str, float] = field(default_factory=dict)  # version -> wall time
    foreign: list[dict] = field(default_factory=list)  # backendRefs that are not ours
    mirror: tuple[str, int] | None = None  # (version, percent) of our RequestMirror filter


class Routes:
    """One ``HTTPRoute`` per environment attached to a Gateway (see module docstring).

    gateway_name / gateway_namespace: the Gateway the route attaches to; hostnames: the
    route's hostnames.
    """

    def __init__(
        self,
        api: KubeApi,
        naming: Naming,
        *,
        gateway_name: str,
        gateway_namespace: str | None = None,
        hostnames: tuple[str, ...] = (),
    ) -> None:
        self.api = api
        self.naming = naming
        self.gateway_name = gateway_name
        self.gateway_namespace = gateway_namespace
        self.hostnames = hostnames

    # -- reading -------------------------------------------------------------------

    def get(self, environment: str) -> dict | None:
        """The route object as stored, or None when there is none."""
        api = self.api
        ns = self.naming.namespace_for(environment)
        name = self.naming.route_name(environment)
        try:
            return api.call(
                "HTTPRoute",
                ns,
                name,
                "read",
                lambda: api.custom.get_namespaced_custom_object(
                    GATEWAY_GROUP,
                    GATEWAY_VERSION,
                    ns,
                    HTTPROUTE_PLURAL,
                    name,
                    **api.timeout(),
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise as_error("HTTPRoute", ns, name, "read", exc) from exc

    def parse(self, environment: str, route: dict | None) -> RouteState:
        """Split a stored route into our versions' weights, 0%-since times and the rest."""
        state = RouteState()
        if route is None:
            return state
        for rule in (route.get("spec") or {}).get("rules") or []:
            state.mirror = state.mirror or self._mirror_of(environment, rule)
            for ref in rule.get("backendRefs") or []:
                version = self.naming.version_of(environment, ref.get("name", ""))
                if version is None or ref.get("kind", "Service") != "Service":
                    state.foreign.append(ref)
                    continue
                state.backends[version] = state.backends.get(version, 0) + int(ref.get("weight", 1))
        raw = ((route.get("metadata") or {}).get("annotations") or {}).get(
            k8s.ANNOTATION_ZERO_WEIGHT_SINCE, "{}"
        )
        try:
            state.zero_since = {str(k): float(v) for k, v in json.loads(raw).items()}
        except (TypeError, ValueError, AttributeError):
            state.zero_since = {}
        return state

    def _mirror_of(self, environment: str, rule: dict) -> tuple[str, int] | None:
        """(version, percent) of the rule's RequestMirror filter to one of our Services."""
        for item in rule.get("filters") or []:
            mirror = item.get("requestMirror") or {}
            if item.get("type") != "RequestMirror":
                continue
            ref = mirror.get("backendRef") or {}
            version = self.naming.version_of(environment, ref.get("name", ""))
            if version is not None:
                return version, int(mirror.get("percent", 100))
        return None

    def read(self, environment: str) -> RouteState:
        """The route's current state (empty when there is no route)."""
        return self.parse(environment, self.get(environment))

    # -- changing ------------------------------------------------------------------

    def set_weights(self, environment: str, weights: Mapping[str, int], now: float) -> None:
        """Give each version its weight; versions already in the route and not named go to
        0% and stay referenced (rollback targets). ``now`` starts their 0% clock."""

        def apply(backends: dict[str, int], zero_since: dict[str, float]) -> None:
            for version in list(backends):
                backends[version] = 0
            backends.update(weights)
            for version, weight in backends.items():
                if weight > 0:
                    zero_since.pop(version, None)
                else:
                    zero_since.setdefault(version, now)

        self.update(environment, apply, "set weights")

    def set_mirror(self, environment: str, version: str | None, percent: int) -> None:
        """Mirror ``percent`` of the route's requests to ``version``'s Service (the caller
        checks it exists; it need not be among the weighted backends); None removes the
        filter. The weights are unchanged; a route that does not exist is an error."""
        ns = self.naming.namespace_for(environment)
        route = self.naming.route_name(environment)
        action = "stop mirroring" if version is None else f"mirror {percent}% to {version}"

        def check(backends: dict[str, int], zero_since: dict[str, float]) -> None:
            if version is not None and not backends:
                raise KubernetesTargetError(
                    "HTTPRoute", ns, route, action, "the route has no versions; set weights first"
                )

        mirror = None if version is None else (version, percent)
        self.update(environment, check, action, create=False, mirror=(mirror,))

    def remove(self, environment: str, version: str) -> None:
        """Drop ``version`` from the route; refuses while it still carries traffic."""
        ns = self.naming.namespace_for(environment)
        route = self.naming.route_name(environment)
        action = f"retire version {version}"

        def drop(backends: dict[str, int], zero_since: dict[str, float]) -> None:
            weight = backends.get(version, 0)
            if weight > 0:
                raise KubernetesTargetError(
                    "HTTPRoute",
                    ns,
                    route,
                    action,
                    f"version {version} still carries {weight}% of the traffic; "
                    "set its weight to 0 first",
                )
            backends.pop(version, None)
            zero_since.pop(version, None)

        self.update(environment, drop, action, create=False)

    def mark_zero_since(self, environment: str, version: str, now: float) -> None:
        """Record ``now`` as the time ``version`` went to 0% unless one is recorded."""
        self.update(
            environment,
            lambda _b, z: z.setdefault(version, now),
            "record N-1 keep window",
            create=False,
        )

    def update(
        self,
        environment: str,
        mutate: Mutation,
        action: str,
        *,
        create: bool = True,
        mirror: tuple[tuple[str, int] | None] | None = None,
    ) -> None:
        """Read the route, apply ``mutate`` to its weights, write it at that resourceVersion.

        ``mirror``: ``((version, percent),)`` or ``(None,)`` to set or remove the mirror
        filter; None keeps the route's (dropped when this change removes its version).

        A 409 means someone changed the route in between: re-read and re-apply (bounded).
        A route left with no backends is deleted. Labels and annotations others put on
        the route are preserved; its spec is ours.
        """
        api = self.api
        ns = self.naming.namespace_for(environment)
        name = self.naming.route_name(environment)
        for _ in range(api.max_conflict_retries):
            current = self.get(environment)
            if current is None and not create:
                return
            state = self.parse(environment, current)
            before = set(state.backends)
            mutate(state.backends, state.zero_since)
            if mirror is not None:
                state.mirror = mirror[0]
            if state.mirror is not None and state.mirror[0] in before - set(state.backends):
                state.mirror = None  # its version was just removed from the route
            if not state.backends and not state.foreign:
                if current is not None:
                    self._delete(ns, name, current)
                return
            desired = self._desired(environment, state)
            try:
                if current is None:
                    self._create(ns, name, action, desired)
                else:
                    self._replace(ns, name, action, current, desired)
                return
            except ApiException as exc:
                if exc.status == 409:
                    api.conflicts_retried += 1
                    log.info("HTTPRoute %s/%s changed under us (409); re-reading", ns, name)
                    continue
                if exc.status == 404:
                    raise KubernetesTargetError(
                        "HTTPRoute",
                        ns,
                        name,
                        action,
                        f"{api_reason(exc)} (is the Gateway API HTTPRoute CRD installed, "
                        f"and does namespace {ns} exist?)",
                        404,
                    ) from exc
                raise as_error("HTTPRoute", ns, name, action, exc) from exc
        raise KubernetesTargetError(
            "HTTPRoute",
            ns,
            name,
            action,
            f"still conflicting after {api.max_conflict_retries} re-reads "
            "(another writer keeps changing it); weights unchanged",
            409,
        )

    def _desired(self, environment: str, state: RouteState) -> dict:
        """The route object for ``state``: our versions by weight, then the foreign
        backends, the 0%-since annotation and the mirror filter."""
        naming = self.naming
        zero_since = {v: t for v, t in state.zero_since.items() if v in state.backends}
        mirror = state.mirror
        desired = k8s.http_route(
            name=naming.route_name(environment),
            namespace=naming.namespace_for(environment),
            environment=environment,
            gateway_name=self.gateway_name,
            gateway_namespace=self.gateway_namespace,
            backends=[
                (naming.object_name(environment, v), w)
                for v, w in sorted(state.backends.items(), key=lambda kv: version_key(kv[0]))
            ],
            hostnames=self.hostnames,
            annotations={k8s.ANNOTATION_ZERO_WEIGHT_SINCE: json.dumps(zero_since)},
            mirror=None
            if mirror is None
            else (naming.object_name(environment, mirror[0]), mirror[1]),
        )
        desired["spec"]["rules"][0]["backendRefs"].extend(state.foreign)
        return desired

    def _create(self, namespace: str, name: str, action: str, desired: dict) -> None:
        api = self.api
        api.call(
            "HTTPRoute",
            namespace,
            name,
            action,
            lambda: api.custom.create_namespaced_custom_object(
                GATEWAY_GROUP,
                GATEWAY_VERSION,
                namespace,
                HTTPROUTE_PLURAL,
                desired,
                **api.timeout(),
            ),
        )

    def _replace(
        self, namespace: str, name: str, action: str, current: dict, desired: dict
    ) -> None:
        api = self.api
        body = dict(current)
        meta = dict(current.get("metadata") or {})
        meta["labels"] = {**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            **desired["metadata"]["annotations"],
        }
        body["metadata"] = meta  # carries the resourceVersion we read
        body["spec"] = desired["spec"]
        api.call(
            "HTTPRoute",
            namespace,
            name,
            action,
            lambda: api.custom.replace_namespaced_custom_object(
                GATEWAY_GROUP,
                GATEWAY_VERSION,
                namespace,
                HTTPROUTE_PLURAL,
                name,
                body,
                **api.timeout(),
            ),
        )

    def _delete(self, namespace: str, name: str, current: dict) -> None:
        api = self.api
        preconditions = {
            "preconditions": {"resourceVersion": current["metadata"]["resourceVersion"]}
        }
        try:
            api.call(
                "HTTPRoute",
                namespace,
                name,
                "delete",
                lambda: api.custom.delete_namespaced_custom_object(
                    GATEWAY_GROUP,
                    GATEWAY_VERSION,
                    namespace,
                    HTTPROUTE_PLURAL,
                    name,
                    body=preconditions,
                    **api.timeout(),
                ),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise as_error("HTTPRoute", namespace, name, "delete", exc) from exc


def check_weights(environment: str, weights: Mapping[str, int]) -> None:
    """Raise ``ValueError`` unless ``weights`` are int percents in 0..100 summing to 100."""
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
