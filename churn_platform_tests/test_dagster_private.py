"""The private Dagster APIs in ``churn_platform.dagster_private`` are still there, as used.

A failure here after a Dagster upgrade names what to re-verify: read the Dagster source of
the name reported, fix its use in ``dagster_private.py``, then update ``CHECKED_ON``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import uuid
from pathlib import Path

import dagster as dg
import pytest

from churn_platform import dagster_private

PACKAGE = Path(dagster_private.__file__).parent


def _resolve(name: str) -> object:
    module, _, qualified = name.partition(":")
    found: object = importlib.import_module(module)
    for part in qualified.split("."):
        found = getattr(found, part)
    return found


def _top(name: str) -> str:
    """``module:Class.method`` -> ``module:Class``."""
    module, _, qualified = name.partition(":")
    return f"{module}:{qualified.split('.')[0]}"


def test_the_installed_dagster_is_the_version_the_private_uses_were_checked_on():
    assert dg.__version__ == dagster_private.CHECKED_ON, (
        f"Dagster {dg.__version__} is installed; churn_platform/dagster_private.py was checked "
        f"on {dagster_private.CHECKED_ON}. Re-verify every name in its USED table (and the "
        "claim-sleep frame name) against the new source, then update CHECKED_ON."
    )


@pytest.mark.parametrize("name", sorted(dagster_private.USED))
def test_each_private_name_exists_and_takes_the_arguments_passed(name: str):
    found = _resolve(name)
    passed = dagster_private.USED[name]
    if not passed:
        return
    accepted = inspect.signature(found).parameters  # type: ignore[arg-type]
    if inspect.isclass(found):
        accepted = inspect.signature(found.__init__).parameters
    missing = [p for p in passed if p not in accepted]
    assert not missing, f"{name} no longer takes {missing}: re-verify its use in dagster_private"


def test_the_claim_sleep_is_the_method_dagster_sleeps_in():
    active = _resolve("dagster._core.execution.plan.active:ActiveExecution")
    assert callable(getattr(active, dagster_private.CLAIM_SLEEP))
    assert f"dagster._core.execution.plan.active:ActiveExecution.{dagster_private.CLAIM_SLEEP}" in (
        dagster_private.USED
    )


def test_every_private_name_imported_in_the_package_is_listed_in_one_module():
    """``runs`` and the rest reach Dagster's internals through ``dagster_private`` only."""
    importing = re.compile(r"^\s*(from|import) dagster\._", re.MULTILINE)
    others = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "dagster_private.py" and importing.search(path.read_text())
    )
    assert others == []
    tree = ast.parse((PACKAGE / "dagster_private.py").read_text())
    imported = [
        f"{node.module}:{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._")
        for alias in node.names
    ]
    listed = {_top(name) for name in dagster_private.USED}
    assert len(imported) == 8
    assert [name for name in imported if name not in listed] == []


def test_the_rebuilt_execute_in_process_fills_the_given_capture_and_reports_each_event():
    """What ``runs.execute`` relies on: the caller's capture dict receives the outputs (so a
    dict that refuses some keeps them out), events arrive one by one, tags are merged."""

    @dg.asset
    def number() -> int:
        return 2

    @dg.asset
    def doubled(number: int) -> int:
        return number * 2

    job = dg.Definitions(
        assets=[number, doubled], jobs=[dg.define_asset_job("double", tags={"of": "job"})]
    ).resolve_job_def("double")
    run_id = str(uuid.uuid4())
    capture: dict = {}
    seen: list[str] = []
    with dg.DagsterInstance.ephemeral() as instance:
        result = dagster_private.execute_in_process(
            job,
            instance,
            {},
            run_id,
            {"by": "test"},
            output_capture=capture,
            on_event=lambda event: seen.append(event.event_type_value),
        )
    assert result.success and result.run_id == run_id
    assert {"of": "job", "by": "test"}.items() <= result.dagster_run.tags.items()
    assert sorted(handle.step_key for handle in capture) == ["doubled", "number"]
    assert result.output_for_node("doubled") == 4
    assert seen == [event.event_type_value for event in result.all_events]
    assert seen.count("STEP_START") == 2
