"""The table spec: the shipped spec reproduces the example schema; bad specs name key and line."""

from __future__ import annotations

import pytest

from churn_platform import settings
from churn_platform.config import load_config
from churn_platform.core import schema as s
from churn_platform.core.spec import (
    SpecError,
    default_spec,
    describe_difference,
    parse_spec,
    spec_of_model_metadata,
)


def test_the_shipped_spec_reproduces_the_example_schema() -> None:
    spec = default_spec()
    assert spec.all_columns == s.ALL_COLUMNS
    assert spec.feature_names == s.MODEL_INPUT_COLUMNS
    assert spec.dtypes == s.CANONICAL_DTYPES
    assert spec.slice_names() == [
        "enterprise",
        "contract:monthly",
        "contract:annual",
        "contract:multi-year",
        "tenure:0-12m",
        "tenure:12-24m",
        "tenure:24m+",
    ]
    assert spec.mapping() == {"columns": {}, "values": {}}


def test_a_spec_round_trips_through_its_dict_with_the_same_hash() -> None:
    spec = default_spec()
    again = parse_spec(spec.to_dict())
    assert again == spec and again.hash == spec.hash
    assert spec_of_model_metadata({"churn_spec": spec.to_dict()}).hash == spec.hash
    assert spec_of_model_metadata(None).hash == spec.hash  # models from before specs


BASE = """\
entity_id: {column: id}
target: {column: y, positive: ["yes"], negative: ["no"]}
features:
  plan: {kind: categorical, allowed: [basic, pro]}
  spend: {kind: numeric}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "serving: {unseen_categories: drop}\n",
            ["spec.yaml:6", "serving.unseen_categories", "'score' or 'refuse'"],
        ),
        ("serving: {extra_fields: ignore}\n", ["spec.yaml:6", "unknown key 'extra_fields'"]),
        ("  odd: {kind: texty}\n", ["spec.yaml:6", "features.odd.kind", "unknown kind 'texty'"]),
        ("  spend2: {kind: numeric, colour: red}\n", ["spec.yaml:6", "unknown key 'colour'"]),
        (
            "slices:\n  - {name: s, column: nope, equals: 1}\n",
            ["slice 's' is on column 'nope', not a feature"],
        ),
        (
            "slices:\n  - {name: s, column: plan, equals: gold}\n",
            ["value(s) ['gold'] not allowed for 'plan'"],
        ),
        (
            "invariances:\n  - {name: i, feature: plan, from: basic, to: gold, direction: decrease}\n",
            ["invariance 'i'", "['gold'] not allowed"],
        ),
        ("drift: {features: [nope]}\n", ["drift.features names 'nope'"]),
        (
            "  probability: {kind: numeric}\n",
            ["['probability'] are reserved", "rename", "'source:'"],
        ),
    ],
)
def test_a_bad_spec_names_the_key_and_the_fix(extra: str, expected: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(BASE + extra, where="spec.yaml")
    for text in expected:
        assert text in str(info.value)


def test_the_target_map_and_differences_are_described() -> None:
    spec = parse_spec(BASE)
    assert spec.mapping()["values"] == {"y": {"yes": 1, "no": 0}}
    dropped = parse_spec(BASE.replace("  spend: {kind: numeric}\n", ""))
    assert describe_difference(spec, dropped) == ["features dropped: spend"]
    assert describe_difference(spec, spec) == []


def test_the_serving_section_travels_in_the_spec_and_leaves_other_hashes_alone() -> None:
    """The optional ``serving:`` section (issue 25): absent or at its defaults, the spec and
    its hash are what they were before the section existed (no retraining by the
    code-version sensor); a strict one is a different spec, logged with the model."""
    plain = parse_spec(BASE)
    assert (plain.serving.unseen_categories, plain.serving.unknown_fields) == ("score", "ignore")
    assert "serving" not in plain.to_dict()
    # the hash of this spec before the section existed (to_dict had no 'serving' key)
    assert plain.hash == "a5f1443dc2a19cda49ad98d6cd82522012340f27179be8438177ac51c860ac0c"
    defaults = parse_spec(BASE + "serving: {unseen_categories: score, unknown_fields: ignore}\n")
    assert defaults.hash == plain.hash and defaults == plain
    strict = parse_spec(BASE + "serving: {unseen_categories: refuse}\n")
    assert strict.serving.refuses_unseen and not strict.serving.refuses_unknown
    assert strict.hash != plain.hash
    assert strict.to_dict()["serving"] == {
        "unseen_categories": "refuse",
        "unknown_fields": "ignore",
    }
    again = spec_of_model_metadata({"churn_spec": strict.to_dict()})
    assert again == strict and again.hash == strict.hash
    assert describe_difference(plain, strict) == ["serving changed"]


def test_chosen_by_one_setting_with_an_error_naming_it(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(BASE)
    spec = load_config({"CHURN_SPEC": str(path), "CHURN_HOME": str(tmp_path)}).model().spec
    assert spec.feature_names == ("plan", "spend")
    with pytest.raises(settings.SettingsError, match="CHURN_SPEC=.*nope.yaml.*cannot be read"):
        load_config({"CHURN_SPEC": str(tmp_path / "nope.yaml"), "CHURN_HOME": str(tmp_path)})
