"""The assets' Dagster config is derived from the core dataclasses: one default, one description."""

import dataclasses

import dagster as dg
import pytest

from churn_platform.core import canary, gate, holdout, model_checks, release, training
from churn_platform.defs.common import config_from
from churn_platform.defs.data import HoldoutSettings
from churn_platform.defs.deployment import ProductionConfig, StagingConfig
from churn_platform.defs.evaluation import GateSettings
from churn_platform.defs.model import ChallengerConfig

DERIVED = [
    (ChallengerConfig, [training.TrainingConfig, model_checks.ModelCheckConfig]),
    (GateSettings, [gate.GateConfig]),
    (StagingConfig, [release.StagingChecks]),
    (ProductionConfig, [canary.CanaryConfig]),
    (HoldoutSettings, [holdout.HoldoutConfig]),
]


@pytest.mark.parametrize(("config", "cores"), DERIVED)
def test_every_core_field_is_a_described_setting_with_the_core_default(config, cores):
    fields = config.model_fields
    for core in cores:
        for f in dataclasses.fields(core):
            assert f.name in fields, f"{config.__name__} lacks {core.__name__}.{f.name}"
            assert fields[f.name].description, f"{config.__name__}.{f.name} has no description"
    built = [config().to_core(core) for core in cores]
    assert built[0] == cores[0]()  # the first core's defaults, untouched


def test_every_setting_of_every_asset_carries_a_description():
    # the launchpad shows these; a field without one is a setting nobody can read about
    seen = 0
    for module_class in (
        ChallengerConfig,
        GateSettings,
        StagingConfig,
        ProductionConfig,
        HoldoutSettings,
    ):
        for name, field in module_class.model_fields.items():
            seen += 1
            assert field.description, f"{module_class.__name__}.{name} has no description"
    from churn_platform.defs.data import ContractSettings

    assert ContractSettings.model_fields["overrides"].description
    assert seen > 20


def test_the_challenger_seed_feeds_training_and_the_checks():
    config = ChallengerConfig(seed=7, min_auc=0.6)
    assert config.to_core(training.TrainingConfig).seed == 7
    checks = config.to_core(model_checks.ModelCheckConfig)
    assert (checks.seed, checks.min_auc) == (7, 0.6)


def test_the_canary_defaults_are_written_once_in_core():
    # the Dagster-side defaults are the core dataclass's, field for field (they once drifted:
    # a 15 s window in the asset config beside 10 s in CanaryConfig)
    assert ProductionConfig().to_core(canary.CanaryConfig) == canary.CanaryConfig()
    assert ProductionConfig.model_fields["synthetic_traffic_rps"].description


def test_run_config_overrides_reach_the_core_config_and_bad_values_name_the_setting():
    seen: list[canary.CanaryConfig] = []

    # no `from __future__ import annotations` here: Dagster reads this annotation as a class
    @dg.asset
    def rollout(config: ProductionConfig) -> float:
        seen.append(config.to_core(canary.CanaryConfig))
        return config.synthetic_traffic_rps

    overrides = {"steps": [10, 100], "analysis_window_seconds": 3.0, "synthetic_traffic_rps": 0.0}
    result = dg.materialize([rollout], run_config={"ops": {"rollout": {"config": overrides}}})
    assert result.success and result.output_for_node("rollout") == 0.0
    assert seen[-1].steps == (10, 100) and seen[-1].analysis_window_seconds == 3.0
    assert seen[-1].max_error_rate == canary.CanaryConfig().max_error_rate

    bad = dg.materialize(
        [rollout],
        run_config={"ops": {"rollout": {"config": {"steps": [5, 50]}}}},
        raise_on_error=False,
    )
    assert not bad.success
    failure = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE")
    assert "CanaryConfig.steps must end at 100" in failure.event_specific_data.error.to_string()


def test_a_core_field_without_a_description_is_refused_with_the_fix():
    @dataclasses.dataclass(frozen=True)
    class Knobs:
        """Knobs.

        depth: how deep.
        """

        depth: int = 3
        width: int = 2

    with pytest.raises(
        ValueError,
        match=r"Knobs\.width has no description: give the field metadata=.* or add a line 'width: ",
    ):
        config_from(Knobs)
