"""Schema changes (issue 25): a candidate requiring request fields the champion's clients do
not send is refused with the field names, or cut over (shadow, then 100% at once).

The comparison reads the two versions' logged specs (``core.schema_change``); the release
policy runs on in-memory fakes, as in ``test_release.py``. The real graph is the last test.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest
import yaml

from churn_platform.config import load_config
from churn_platform.core import deployment_step
from churn_platform.core import records as r
from churn_platform.core.canary import CanaryConfig, CanaryState, release_line
from churn_platform.core.release import VersionSpecs, release
from churn_platform.core.rollout import (
    EnvironmentState,
    ErrorRate,
    ServedVersion,
    ShadowObservations,
    ShadowTarget,
)
from churn_platform.core.schema_change import field_breaks
from churn_platform.core.spec import Spec, default_spec, parse_spec
from churn_platform.settings import SettingsError

BASE = default_spec()


def edited(change: Any) -> Spec:
    """The shipped spec with ``change(data)`` applied to its dict form."""
    data = BASE.to_dict()
    change(data)
    return parse_spec(data)


def without(*features: str) -> Spec:
    def drop(data: dict[str, Any]) -> None:
        for name in features:
            del data["features"][name]

    return edited(drop)


def feature_edit(name: str, **values: Any) -> Spec:
    return edited(lambda data: data["features"][name].update(values))


# -- the comparison ----------------------------------------------------------------------


def test_a_feature_the_champion_does_not_declare_is_a_field_its_clients_do_not_send():
    breaks = field_breaks(without("support_tickets"), BASE)
    assert [b.field for b in breaks] == ["support_tickets"]
    assert "not declared by the champion" in breaks[0].problem
    assert field_breaks(BASE, BASE) == ()


def test_a_dropped_feature_or_a_nullable_change_requires_nothing_new_of_a_client():
    # the server never required a non-null value: nulls are imputed whatever nullable says
    assert field_breaks(BASE, without("support_tickets")) == ()
    assert field_breaks(BASE, feature_edit("monthly_spend", nullable=False)) == ()
    assert field_breaks(BASE, feature_edit("tenure_months", range=[0, 100])) == ()


def test_a_dropped_field_or_a_dropped_category_breaks_only_a_strict_candidate():
    def strict(**rules: str) -> Any:
        return lambda data: data.update(serving=rules)

    narrowed = {"allowed": ["monthly", "annual"]}
    lenient_drop = without("region")
    strict_drop = edited(
        lambda d: (d["features"].pop("region"), strict(unknown_fields="refuse")(d))
    )
    assert field_breaks(BASE, lenient_drop) == ()  # ignored (and counted) by default
    (dropped,) = field_breaks(BASE, strict_drop)
    assert dropped.field == "region" and "unknown_fields: refuse" in dropped.problem
    assert field_breaks(BASE, feature_edit("contract_type", **narrowed)) == ()
    refusing = edited(
        lambda d: (
            d["features"]["contract_type"].update(narrowed),
            strict(unseen_categories="refuse")(d),
        )
    )
    (category,) = field_breaks(BASE, refusing)
    assert category.field == "contract_type" and "multi-year" in category.problem


def test_a_kind_change_breaks_unless_it_widens_whole_numbers_to_numbers():
    narrowed = field_breaks(BASE, feature_edit("monthly_spend", kind="integer", mean_range=None))
    assert [b.field for b in narrowed] == ["monthly_spend"]
    assert "was numeric" in narrowed[0].problem and "whole number" in narrowed[0].problem
    assert field_breaks(BASE, feature_edit("tenure_months", kind="numeric")) == ()


def test_raw_clients_break_on_a_renamed_source_column_or_a_label_no_longer_mapped():
    champion = feature_edit(
        "contract_type", source="Contract", values={"Month-to-month": "monthly"}
    )
    renamed = feature_edit(
        "contract_type", source="ContractType", values={"Month-to-month": "monthly"}
    )
    (moved,) = field_breaks(champion, renamed)
    assert moved.field == "contract_type" and "'Contract'" in moved.problem
    unmapped = feature_edit("contract_type", source="Contract")
    (label,) = field_breaks(champion, unmapped)
    assert "Month-to-month" in label.problem


# -- the release policy on fakes ------------------------------------------------------------


class MirrorMemoryTarget:
    """Environments as dicts of version -> weight, a mirror, and every weight change kept."""

    def __init__(self, **running: dict[str, int]) -> None:
        self.envs = {env: dict(w) for env, w in running.items()}
        self.deployed: list[tuple[str, str]] = []
        self.retired: list[tuple[str, str]] = []
        self.weight_history: list[dict[str, int]] = []
        self.mirror: list[str | None] = []
        rng = np.random.default_rng(5)
        scores = tuple(float(x) for x in rng.beta(2, 6, 400))
        self.observed = ShadowObservations(
            "2", 400, 0, scores, scores, (0.01,) * 400, (0.01,) * 400
        )

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        self.envs.setdefault(environment, {}).setdefault(version, 0)
        self.deployed.append((environment, version))
        return ServedVersion(version, model_uri, f"http://{environment}/{version}", 0)

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        env = self.envs[environment]
        assert sum(weights.values()) == 100 and set(weights) <= set(env), (weights, env)
        self.envs[environment] = {v: weights.get(v, 0) for v in env}
        if environment == r.PRODUCTION:
            self.weight_history.append(dict(self.envs[environment]))
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        served = tuple(
            ServedVersion(v, f"models:/m/{v}", f"http://{environment}/{v}", w)
            for v, w in self.envs.get(environment, {}).items()
        )
        return EnvironmentState(environment, f"http://{environment}", served)

    def retire(self, environment: str, version: str) -> None:
        assert self.envs[environment][version] == 0, "retiring a version that carries traffic"
        del self.envs[environment][version]
        self.retired.append((environment, version))

    def set_mirror(self, environment: str, version: str | None, percent: int = 100) -> None:
        self.mirror.append(version)

    def shadow_observations(self, environment: str) -> ShadowObservations | None:
        return self.observed if self.mirror and self.mirror[-1] else None


class NoMirrorTarget(MirrorMemoryTarget):
    """The same target, seen without its mirror (a target that cannot shadow)."""

    set_mirror = None  # type: ignore[assignment]
    shadow_observations = None  # type: ignore[assignment]


class SpecRegistry:
    """Aliases, tags and each version's logged spec, in dicts."""

    def __init__(self, specs: dict[str, Spec], **aliases: str) -> None:
        self.specs = specs
        self.aliases = dict(aliases)
        self.tags: dict[str, dict[str, str]] = {}

    def alias_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        self.tags.setdefault(version, {}).update(tags)

    def model_uri(self, version: str) -> str:
        return f"models:/m/{version}"

    def spec_of_version(self, version: str) -> Spec:
        return self.specs[version]


class Healthy:
    """Every version error-free, 100 more requests per reading."""

    def __init__(self) -> None:
        self.n = 0

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        self.n += 1
        return ErrorRate(version, 0.0, 100.0 * self.n, "scripted", "", 0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


STAGED = r.StagingResult(r.DEPLOY, candidate="2", model_uri="models:/m/2", baseline="1")
CANARY = CanaryConfig(steps=(5, 25, 100), analysis_window_seconds=30, interval_seconds=1)


def setup(candidate_spec: Spec, target_type: type = MirrorMemoryTarget):
    target = target_type(production={"1": 100}, staging={"1": 100, "2": 0})
    registry = SpecRegistry(
        {"1": without("support_tickets"), "2": candidate_spec}, champion="1", previous="0"
    )
    return target, registry


def run(target, registry, config: CanaryConfig = CANARY):
    clock = Clock()
    return release(target, registry, Healthy(), STAGED, config, sleep=clock.sleep, clock=clock)


def test_a_schema_breaking_candidate_is_refused_with_the_fields_and_nothing_moves():
    target, registry = setup(BASE)
    assert isinstance(target, ShadowTarget) and isinstance(registry, VersionSpecs)
    done = run(target, registry)
    assert done.canary is None and done.record.action == r.REFUSED
    assert (
        "support_tickets" in done.record.reason and "schema_change: cutover" in done.record.reason
    )
    assert done.schema_change is not None and done.schema_change.fields == ["support_tickets"]
    # nothing deployed, no weight moved, no mirror, aliases untouched, staging as it was
    assert target.deployed == [] and target.weight_history == [] and target.mirror == []
    assert target.envs == {r.PRODUCTION: {"1": 100}, r.STAGING: {"1": 100, "2": 0}}
    assert registry.aliases == {r.CHAMPION: "1", r.PREVIOUS: "0"}
    assert registry.tags["2"][r.TAG_DEPLOYMENT].startswith("refused: candidate v2 requires")
    # what the asset and the CLI show
    assert not deployment_step.canary_passed(done)
    meta = deployment_step.release_metadata(done, {"1": 100}, "1", "0")
    assert meta["outcome"] == r.REFUSED and meta["schema_change_fields"] == "support_tickets"
    assert meta["schema_change"].startswith("refused: ")
    line = release_line(
        {"action": done.record.action, "candidate": "2", "reason": done.record.reason}
    )
    assert line.startswith("release v2: REFUSED (schema change) - ") and "support_tickets" in line


def test_a_cutover_runs_the_shadow_then_moves_all_traffic_at_once():
    target, registry = setup(BASE)
    done = run(target, registry, replace(CANARY, schema_change="cutover"))
    assert done.canary is not None and done.record.action == r.PROMOTED, done.canary.as_markdown()
    # the mirror ran and was off before the first weight change; then one step: 100%
    assert target.mirror == ["2", None]
    assert target.weight_history == [{"1": 0, "2": 100}]
    states = [t.to_state for t in done.canary.transitions]
    assert states[0] is CanaryState.SHADOWING and states[-1] is CanaryState.SUCCEEDED
    assert {t.step for t in done.canary.transitions} == {0, 100}
    assert done.record.reason.startswith("schema change cut-over (support_tickets): ")
    assert registry.aliases == {r.CHAMPION: "2", r.PREVIOUS: "1"}
    assert deployment_step.canary_passed(done)
    meta = deployment_step.release_metadata(done, {"2": 100}, "2", "1")
    assert meta["schema_change"].startswith("cut over: shadow, then 100% at once")


def test_a_cutover_without_a_shadow_is_refused():
    cutover = replace(CANARY, schema_change="cutover")
    target, registry = setup(BASE)
    off = run(target, registry, replace(cutover, shadow=False))
    assert off.record.action == r.REFUSED and "set shadow: true" in off.record.reason
    target, registry = setup(BASE, NoMirrorTarget)
    blind = run(target, registry, cutover)
    assert blind.record.action == r.REFUSED and "cannot mirror" in blind.record.reason
    assert target.deployed == [] and registry.aliases[r.CHAMPION] == "1"


def test_a_compatible_spec_change_goes_through_the_usual_steps():
    target, registry = setup(without("support_tickets", "region"))  # drops a field: fine
    done = run(target, registry)
    assert done.record.action == r.PROMOTED and done.schema_change is None
    assert [w["2"] for w in target.weight_history] == [5, 25, 100]


# -- the setting ------------------------------------------------------------------------------


def test_the_setting_is_the_default_of_the_release_config_and_bad_values_name_it(
    monkeypatch: pytest.MonkeyPatch,
):
    from churn_platform.defs.deployment import ProductionConfig, production_config

    with pytest.raises(ValueError, match="schema_change must be one of"):
        CanaryConfig(schema_change="maybe")  # type: ignore[arg-type]
    assert ProductionConfig().to_core(CanaryConfig).schema_change == "refuse"
    monkeypatch.setenv("CHURN_SCHEMA_CHANGE", "cutover")
    model = load_config().model()
    assert model.schema_change == "cutover"
    assert production_config(model)().to_core(CanaryConfig).schema_change == "cutover"
    monkeypatch.setenv("CHURN_SCHEMA_CHANGE", "sometimes")
    with pytest.raises(SettingsError, match="CHURN_SCHEMA_CHANGE='sometimes'"):
        load_config()


# -- the real graph ----------------------------------------------------------------------------


def test_the_real_release_refuses_a_candidate_needing_a_field_the_champion_lacked(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
):
    from churn_platform.targets.local import LocalProcessTarget
    from churn_platform_tests.pipeline import (
        FAST_GATE,
        FAST_MODEL,
        THROUGH_STAGING,
        WEAK_MODEL,
        checks,
        materialize,
        registry,
        release_graph,
        step_error,
    )

    narrow = local_platform / "narrow.yaml"
    narrow.write_text(yaml.safe_dump(without("support_tickets").to_dict(), sort_keys=False))
    monkeypatch.setenv("CHURN_SPEC", str(narrow))
    instance = dg.DagsterInstance.ephemeral()
    release_graph(instance, WEAK_MODEL, {"synthetic_traffic_rps": 0.0})  # v1: first, no canary
    reg = registry()
    assert reg.alias_version("champion") == "1"

    monkeypatch.delenv("CHURN_SPEC")  # the shipped spec: support_tickets comes back
    second = materialize(
        [*THROUGH_STAGING, "production_deployment"],
        instance,
        {
            "challenger_model": {"config": FAST_MODEL},
            "evaluation_report": {"config": FAST_GATE},
            "production_deployment": {"config": {"synthetic_traffic_rps": 0.0}},
        },
    )
    assert second.success, step_error(second)
    assert second.output_for_node("staging_deployment").candidate == "2"
    done = second.output_for_node("production_deployment")
    assert done.action == r.REFUSED and "support_tickets" in done.reason, done
    analysis = checks(second)[("production_deployment", "canary_analysis")]
    assert not analysis.passed and analysis.metadata["outcome"].value == r.REFUSED
    assert analysis.metadata["schema_change_fields"].value == "support_tickets"
    assert reg.alias_version("champion") == "1" and reg.alias_version("previous") is None
    assert reg.version_info("2").tags[r.TAG_DEPLOYMENT].startswith("refused: ")
    deployments = LocalProcessTarget(local_platform / "deployments")
    assert deployments.state("production").weights() == {"1": 100}
    assert deployments.state("staging").weights() == {"1": 100, "2": 0}

    # the clients send support_tickets now (the lenient champion ignores it): cut over
    cutover = {
        "schema_change": "cutover",
        "analysis_window_seconds": 120.0,
        "interval_seconds": 0.5,
        "synthetic_traffic_rps": 60.0,
    }
    third = materialize(
        ["production_deployment"], instance, {"production_deployment": {"config": cutover}}
    )
    assert third.success, step_error(third)
    done = third.output_for_node("production_deployment")
    analysis = checks(third)[("production_deployment", "canary_analysis")]
    assert done.action == r.PROMOTED, analysis.metadata["reason"].value
    assert done.reason.startswith("schema change cut-over (support_tickets): ")
    table = analysis.metadata["transitions"].value
    assert "shadowing" in table and "2: 5%" not in table and "2: 25%" not in table
    assert reg.alias_version("champion") == "2" and reg.alias_version("previous") == "1"
    assert deployments.state("production").weights().get("2") == 100
