"""The IO manager stores data (Parquet, JSON), never pickles, and never loads a pickle."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from churn_platform.core.drift import PsiResult
from churn_platform.core.mapping import MappedFrame, apply_mapping
from churn_platform.core.records import ChallengerModel, StagingResult
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.resources import io_manager
from churn_platform.resources.io_manager import (
    DataIOManager,
    StoredValueError,
    read_value,
    write_value,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "tenure": pd.array([1, None, 3], dtype="Int64"),
            "spend": [1.5, np.nan, 3.25],
            "plan": pd.Categorical(["monthly", "annual", "monthly"]),
            "signup": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]),
        },
        index=[10, 20, 30],
    )


def test_a_frame_round_trips_as_parquet_with_dtypes_and_index(tmp_path):
    frame = _frame()
    version = write_value(tmp_path / "holdout_set", frame)
    assert sorted(p.name for p in version.iterdir()) == ["frame-0.parquet", "value.json"]
    assert pd.read_parquet(version / "frame-0.parquet").shape == frame.shape  # plain Parquet
    pd.testing.assert_frame_equal(read_value(tmp_path / "holdout_set"), frame)


def test_json_values_round_trip_with_their_python_types(tmp_path):
    value = {
        "promote": True,
        "delta": np.float64(0.0123),
        "rows": np.int64(7),
        "slices": [{"name": "annual", "auc": 0.8}],
        "ci": (0.1, 0.2),
        "by_version": {1: "champion"},
        "missing": None,
        "when": pd.Timestamp("2026-11-30T02:00:00Z"),
        "report": Path("/tmp/report.md"),
    }
    back = read_value(write_value(tmp_path / "evaluation_report", value).parent)
    assert back["ci"] == (0.1, 0.2) and back["by_version"] == {1: "champion"}
    assert back["report"] == Path("/tmp/report.md")
    assert back["delta"] == 0.0123 and back["rows"] == 7 and back["promote"] is True
    assert back["when"] == pd.Timestamp("2026-11-30T02:00:00Z").to_pydatetime()
    assert back == {**value, "delta": 0.0123, "rows": 7, "when": back["when"]}


def test_a_dict_whose_key_looks_like_a_tag_stays_a_dict(tmp_path):
    value = {"__frame__": "../../etc/passwd", "x": 1}
    assert read_value(write_value(tmp_path / "x", value).parent) == value


def _challenger(auc: float) -> ChallengerModel:
    return ChallengerModel(
        model_name="churn",
        version="3",
        model_uri="models:/churn/3",
        run_id="r",
        experiment_id="1",
        data_version="d",
        holdout_hash="h",
        metrics={"auc": auc},
        checks_passed=True,
        params={"seed": 1, "estimator": "logistic", "c": None},
    )


def test_records_round_trip_under_their_registered_name(tmp_path):
    model = _challenger(0.8)
    staged = StagingResult(action="deploy", candidate="3", model_uri="models:/churn/3")
    assert read_value(write_value(tmp_path / "challenger_model", model).parent) == model
    assert read_value(write_value(tmp_path / "staging", staged).parent) == staged
    back = read_value(write_value(tmp_path / "pair", {"now": staged, "then": (model,)}).parent)
    assert back == {"now": staged, "then": (model,)}
    manifest = json.loads(next((tmp_path / "challenger_model").glob("v-*/value.json")).read_text())
    assert manifest["value"]["__dataclass__"] == "churn_platform.core.records:ChallengerModel"
    assert set(io_manager.RECORDS.values()) >= {ChallengerModel, StagingResult, MappedFrame}


def test_a_dataclass_holding_frames_stores_them_as_parquet_beside_the_json(tmp_path):
    raw = generate(SyntheticSpec(n_rows=50, seed=1)).astype({"monthly_spend": str})
    raw.loc[3, "monthly_spend"] = "lots"  # one unparseable cell: conversion examples hold a frame
    mapped = apply_mapping(raw, spec=default_spec())
    assert isinstance(mapped, MappedFrame) and mapped.unparseable_total == 1
    version = write_value(tmp_path / "churn_snapshot", mapped)
    assert len(list(version.glob("*.parquet"))) >= 2  # the rows and the examples
    back = read_value(tmp_path / "churn_snapshot")
    assert isinstance(back, MappedFrame)
    pd.testing.assert_frame_equal(back.frame, mapped.frame)
    assert back.summary() == mapped.summary()
    assert back.conversion_report.keys() == mapped.conversion_report.keys()


@dataclasses.dataclass(frozen=True)
class Outsider:
    """A dataclass of a module outside churn_platform."""

    x: int = 1


def test_an_unregistered_dataclass_is_refused_both_ways(tmp_path):
    with pytest.raises(StoredValueError, match="Outsider is not a record of .*RECORDS"):
        write_value(tmp_path / "a", Outsider())
    # a churn_platform dataclass that no asset stores is refused too
    with pytest.raises(StoredValueError, match="drift.PsiResult is not a record of"):
        write_value(tmp_path / "a", PsiResult({}, 0, None, 0.0, {}, {}))
    with pytest.raises(StoredValueError, match="cannot be stored"):
        write_value(tmp_path / "b", object())
    # a record whose class changed since it was stored names the fix
    write_value(tmp_path / "c", _challenger(0.7))
    manifest = next((tmp_path / "c").glob("v-*/value.json"))
    doc = json.loads(manifest.read_text())
    doc["value"]["fields"]["renamed_field"] = doc["value"]["fields"].pop("run_id")
    manifest.write_text(json.dumps(doc))
    with pytest.raises(StoredValueError, match="does not fit the class as it is now"):
        read_value(tmp_path / "c")


@pytest.mark.parametrize(
    ("planted", "module"),
    [
        ("churn_platform.__main__:X", "churn_platform.__main__"),  # would run the CLI
        (
            "churn_platform.core.gate_simulation:SimulationResult",
            "churn_platform.core.gate_simulation",
        ),
        ("churn_platform.core.drift:PsiResult", None),  # a real dataclass, not a record
        ("subprocess:Popen", None),
    ],
)
def test_a_planted_type_name_is_refused_and_nothing_is_imported(
    tmp_path: Path, planted: str, module: str | None
) -> None:
    """A manifest under storage naming a type outside the registry: the load fails naming
    the file and the type; the module it names is never imported."""
    storage = tmp_path / "storage"
    write_value(storage / "staging_deployment", StagingResult(action="none", reason="kept"))
    manifest = next((storage / "staging_deployment").glob("v-*/value.json"))
    doc = json.loads(manifest.read_text())
    doc["value"]["__dataclass__"] = planted
    manifest.write_text(json.dumps(doc))
    if module:
        sys.modules.pop(module, None)
    manager = DataIOManager(base_dir=str(storage))
    context = dg.build_input_context(asset_key=dg.AssetKey("staging_deployment"))
    with pytest.raises(StoredValueError) as refused:
        manager.load_input(context)
    assert str(manifest) in str(refused.value) and repr(planted) in str(refused.value)
    assert "it is not loaded" in str(refused.value)
    if module:
        assert module not in sys.modules


def test_stored_values_and_snapshots_are_readable_by_their_owner_only(tmp_path):
    from churn_platform.resources.storage import StorageResource

    def modes(root: Path) -> dict[str, int]:
        return {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in root.rglob("*")}

    old = os.umask(0o022)  # the usual umask: would give 0644 files and 0755 folders
    try:
        write_value(tmp_path / "storage" / "churn_snapshot", _frame(), run_id="run-a")
        write_value(tmp_path / "storage" / "challenger_model", _challenger(0.8))
        StorageResource(base_url=str(tmp_path / "home")).write_frame(
            "snapshots/s.parquet", _frame()
        )
    finally:
        os.umask(old)
    found = modes(tmp_path / "storage") | modes(tmp_path / "home")
    assert any(k.endswith("frame-0.parquet") for k in found) and "home/snapshots" in found
    for path, mode in found.items():
        expected = 0o700 if (tmp_path / path).is_dir() else 0o600
        assert mode == expected, f"{path} is {oct(mode)}, not {oct(expected)}"
    assert (tmp_path / "storage").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_planted_pickle_is_never_loaded(tmp_path, churn_home, monkeypatch):
    """A pickle where the old FilesystemIOManager kept the value: the run fails, no code runs."""
    monkeypatch.chdir(tmp_path)
    storage = churn_home / "storage"
    storage.mkdir()
    (storage / "upstream").write_bytes(pickle.dumps(_Boom()))

    @dg.asset
    def upstream() -> pd.DataFrame:
        return _frame()

    @dg.asset
    def downstream(upstream: pd.DataFrame) -> int:
        return len(upstream)

    result = dg.materialize(
        [upstream, downstream],
        selection=["downstream"],
        resources={"io_manager": DataIOManager(base_dir=str(storage))},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "it is never loaded" in failure.event_specific_data.error.to_string()
    assert not (tmp_path / "PWNED").exists()

    # re-materialising replaces the planted file with data; the next run reads it
    assert dg.materialize(
        [upstream, downstream], resources={"io_manager": DataIOManager(base_dir=str(storage))}
    ).success
    pd.testing.assert_frame_equal(read_value(storage / "upstream"), _frame())
    assert not (tmp_path / "PWNED").exists()


def test_a_pickle_planted_inside_a_version_folder_is_not_read(tmp_path):
    write_value(tmp_path / "x", {"a": 1})
    version = next((tmp_path / "x").glob("v-*"))
    (version / "value.json").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(StoredValueError, match="not a readable JSON manifest"):
        read_value(tmp_path / "x")


def test_a_write_killed_half_way_leaves_the_previous_value_readable(tmp_path, monkeypatch):
    folder = tmp_path / "validated_churn_data"
    write_value(folder, {"generation": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(io_manager, "atomic_write_bytes", killed)  # dies before the pointer
    with pytest.raises(KeyboardInterrupt):
        write_value(folder, {"generation": 2})
    monkeypatch.undo()
    assert read_value(folder) == {"generation": 1}

    # a crash while the manifest was being written: the half folder is never pointed at
    half = folder / ".tmp-00000000000000000001-dead"
    half.mkdir()
    (half / "value.json").write_text('{"format": "churn_platfo')
    assert read_value(folder) == {"generation": 1}
    write_value(folder, {"generation": 3})
    assert read_value(folder) == {"generation": 3}
    # the dead write's folder goes once it is older than the value a reader may still be on
    write_value(folder, {"generation": 4})
    assert read_value(folder) == {"generation": 4}
    assert len(list(folder.glob("v-*"))) == 2


def test_an_asset_with_nothing_stored_says_so(tmp_path):
    with pytest.raises(StoredValueError, match="nothing stored at .*materialise the asset first"):
        read_value(tmp_path / "never_written")


def test_the_environment_wires_the_data_io_manager_under_churn_home(churn_home):
    from churn_platform.resources.environments import resources_for_environment

    manager = resources_for_environment()["io_manager"]
    assert isinstance(manager, DataIOManager)
    assert Path(manager.base_dir) == churn_home / "storage"


def test_the_storage_resource_writes_under_its_base_and_refuses_keys_that_leave_it(tmp_path):
    from churn_platform.resources.storage import StorageResource

    storage = StorageResource(base_url=(tmp_path / "home").as_uri())
    where = storage.write_frame("snapshots/s.parquet", _frame(), index=False)
    assert Path(where) == tmp_path / "home" / "snapshots" / "s.parquet"
    assert len(pd.read_parquet(where)) == 3
    assert Path(storage.write_text("reports/q.md", "# ok")).read_text() == "# ok"
    assert sorted(p.name for p in (tmp_path / "home").rglob("*")) == [
        "q.md",
        "reports",
        "s.parquet",
        "snapshots",
    ]  # no temporary files left behind
    for bad in ("../outside.md", "/etc/passwd", "reports/../../x", ""):
        with pytest.raises(ValueError, match="must be a relative path"):
            storage.write_text(bad, "x")
    with pytest.raises(ValueError, match="the scheme 'gs' is not supported"):
        StorageResource(base_url="gs://bucket/churn").write_text("a.md", "x")


def test_a_run_reads_the_value_it_wrote_while_a_concurrent_run_moved_current(tmp_path):
    folder = tmp_path / "challenger_model"
    write_value(folder, {"trained_by": "a"}, run_id="run-a")
    write_value(folder, {"trained_by": "b"}, run_id="run-b")
    for later in range(3):  # more writes by other runs: a's version is not pruned
        write_value(folder, {"trained_by": f"other-{later}"}, run_id=f"run-{later}")
    assert read_value(folder, run_id="run-a") == {"trained_by": "a"}
    assert read_value(folder, run_id="run-b") == {"trained_by": "b"}
    # a run that did not write it reads the current value
    assert read_value(folder, run_id="run-c") == {"trained_by": "other-2"}
    assert read_value(folder) == {"trained_by": "other-2"}
    with pytest.raises(ValueError, match="is not a Dagster run id"):
        read_value(folder, run_id="../CURRENT")


def test_the_io_manager_loads_this_runs_own_upstream_value(tmp_path):
    manager = DataIOManager(base_dir=str(tmp_path))

    @dg.asset
    def upstream(context) -> dict:
        return {"run": context.run.run_id}

    @dg.asset(deps=[upstream])
    def concurrent_run() -> None:
        """Another run stores its upstream value after this run's, before the next step."""
        write_value(tmp_path / "upstream", {"run": "concurrent"}, run_id="other-run")

    @dg.asset(deps=[concurrent_run])
    def downstream(context, upstream: dict) -> dict:
        assert upstream == {"run": context.run.run_id}
        return upstream

    result = dg.materialize(
        [upstream, concurrent_run, downstream], resources={"io_manager": manager}
    )
    assert result.success
