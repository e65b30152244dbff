"""The code-version and new-file sensors, ticked with ``build_sensor_context`` against a real
Dagster instance: one ``churn_retraining`` run per new code version and per new file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_platform.config import load_config
from churn_platform.core import features, training
from churn_platform.core.spec import default_spec
from churn_platform.definitions import build_definitions
from churn_platform.defs import automation, model
from churn_platform.resources.data_source import FileSourceResource, SyntheticSourceResource
from churn_platform.resources.notify import Notifier
from churn_platform_tests.pipeline import resource

MODEL = load_config({}).model()
CODE_VERSION = model.training_code_version(default_spec())


def stand_in(code_version: str) -> dg.AssetsDefinition:
    """An asset keyed ``challenger_model`` with a given code version: materialising it records
    the version exactly as the real asset's materialisation does (tag dagster/code_version)."""

    @dg.asset(name=model.ASSET, code_version=code_version)
    def challenger_model() -> int:
        return 1

    return challenger_model


def telling() -> dict[str, Any]:
    """The resources every sensor tells its errors through (no channel configured)."""
    return {"notifier": Notifier(), "storage": resource("storage")}


def code_tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorExecutionData:
    """One tick of the code-version sensor as the definitions build it now."""
    context = dg.build_sensor_context(
        definitions=build_definitions(), instance=instance, cursor=cursor, resources=telling()
    )
    return automation.build_code_version_sensor(MODEL).evaluate_tick(context)


def test_code_version_hashes_the_training_code() -> None:
    assert model.training_code_version(default_spec()) == CODE_VERSION
    assert model.training_code_version(default_spec(), (features, training)) != CODE_VERSION
    (asset,) = model.build(MODEL)
    assert asset.code_versions_by_key[dg.AssetKey(model.ASSET)] == CODE_VERSION


def test_one_run_per_new_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    trained_with = CODE_VERSION
    with dg.DagsterInstance.ephemeral() as instance:
        never = code_tick(instance, None)
        assert not never.run_requests and "never materialised" in (never.skip_message or "")

        dg.materialize([stand_in(trained_with)], instance=instance)
        current = code_tick(instance, None)
        assert not current.run_requests and "up to date" in (current.skip_message or "")

        # the training code changes: the deployed definitions carry a new code version
        monkeypatch.setattr(automation, "training_code_version", lambda spec: "new-code")
        first = code_tick(instance, current.cursor)
        assert len(first.run_requests) == 1
        request = first.run_requests[0]
        assert request.run_key == "new-code"
        assert request.tags["churn/trigger"] == "code"
        assert request.tags["churn/previous_code_version"] == trained_with
        assert first.cursor == "new-code"

        # the same code version again (the run has not finished yet): no second run
        again = code_tick(instance, first.cursor)
        assert not again.run_requests and "already requested" in (again.skip_message or "")

        # the run trained with the new code: up to date, still no run
        dg.materialize([stand_in("new-code")], instance=instance)
        done = code_tick(instance, again.cursor)
        assert not done.run_requests and "up to date" in (done.skip_message or "")


def file_tick(
    source: dg.ConfigurableResource, instance: dg.DagsterInstance, cursor: str | None
) -> dg.SensorExecutionData:
    context = dg.build_sensor_context(
        definitions=build_definitions(),
        instance=instance,
        cursor=cursor,
        resources={"data_source": source, **telling()},
    )
    return automation.build_new_file_sensor(MODEL).evaluate_tick(context)


def test_one_run_per_new_file(tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    folder.mkdir()
    (folder / "2026-11-01.csv").write_text("customer_id\n1\n")
    (folder / ".partial.csv").write_text("customer_id\n")  # hidden: an upload in progress
    source = FileSourceResource(path=str(folder))
    with dg.DagsterInstance.ephemeral() as instance:
        baseline = file_tick(source, instance, None)
        assert not baseline.run_requests and "baseline: 1 file" in (baseline.skip_message or "")
        assert not file_tick(source, instance, baseline.cursor).run_requests

        (folder / "2026-11-08.csv").write_text("customer_id\n1\n2\n")
        (folder / "notes.txt").write_text("not data")
        new = file_tick(source, instance, baseline.cursor)
        assert [r.tags["churn/file"] for r in new.run_requests] == ["2026-11-08.csv"]
        assert new.run_requests[0].tags["churn/trigger"] == "new_data"
        assert new.run_requests[0].run_key.startswith("2026-11-08.csv:")

        same = file_tick(source, instance, new.cursor)
        assert not same.run_requests and same.skip_message == "no new file"

        # the same name rewritten with other content is a new file
        rewritten = folder / "2026-11-08.csv"
        rewritten.write_text("customer_id\n1\n2\n3\n")
        stat = rewritten.stat()
        os.utime(rewritten, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        again = file_tick(source, instance, same.cursor)
        assert [r.tags["churn/file"] for r in again.run_requests] == ["2026-11-08.csv"]
        assert again.run_requests[0].run_key != new.run_requests[0].run_key


@pytest.mark.parametrize("kind", ["synthetic", "single file"])
def test_no_folder_no_runs(kind: str, tmp_path: Path) -> None:
    file = tmp_path / "rows.csv"
    file.write_text("customer_id\n1\n")
    source = (
        SyntheticSourceResource(n_rows=10)
        if kind == "synthetic"
        else FileSourceResource(path=str(file))
    )
    with dg.DagsterInstance.ephemeral() as instance:
        data = file_tick(source, instance, None)
    assert not data.run_requests and "folder" in (data.skip_message or "")
