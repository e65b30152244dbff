"""What a person sees in the Dagster UI after the real pipeline ran (dagster-webserver + Chromium).

A module fixture runs the graph through `evaluation_report` on synthetic data against a
persistent SQLite instance in a temporary `DAGSTER_HOME` (a copy of `deploy/local/dagster.yaml`),
then starts `dagster-webserver -w workspace.yaml` on that instance. Headless Debian Chromium
(Playwright) opens the pages a person would open and the tests assert on rendered text:
the asset group, the contract checks, the model checks with their interval evidence, the
evaluation report with its embedded plots, and the schedule and sensor.

Screenshots go to `$CHURN_UI_SCREENSHOTS` when set (for humans), else to a temp folder.
Needs `/usr/bin/chromium` (`deploy/local/setup.sh` installs it); skipped without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from churn_platform.core import contract
from churn_platform.core.spec import default_spec
from churn_platform.testing import dagster_webserver
from churn_platform_tests.pipeline import (
    ASSET_NAMES,
    FAST_GATE,
    FAST_MODEL,
    THROUGH_EVALUATION,
    WEEKLY,
    checks,
    materialize,
    step_error,
)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCATION = "churn_platform"
GROUP = "churn"
TIMEOUT_MS = 30_000  # the UI is a React app on 2 shared cores: wait generously
CLEARED_VARS = (
    "MLFLOW_TRACKING_URI",
    "PROMETHEUS_URL",
    "CHURN_SOURCE",
    "CHURN_SOURCE_PATH",
    "CHURN_MAPPING_FILE",
    "CHURN_ENV",
    "CHURN_AUTO_RELEASE",
)

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: the UI tests drive Debian's Chromium (deploy/local/setup.sh installs it)",
)


def _bin(name: str) -> str:
    """A console script of the running virtualenv (.venv/bin), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed in {Path(sys.executable).parent} nor on PATH"
    return found


def _platform_env(dagster_home: Path, churn_home: Path) -> dict[str, str]:
    """The environment of a CLI/webserver process bound to the given homes."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_VARS}
    env.update(DAGSTER_HOME=str(dagster_home), CHURN_HOME=str(churn_home), OMP_NUM_THREADS="2")
    return env


def _new_homes(root: Path) -> tuple[Path, Path]:
    dagster_home, churn_home = root / "dagster_home", root / "churn_home"
    dagster_home.mkdir(parents=True)
    churn_home.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", dagster_home / "dagster.yaml")
    return dagster_home, churn_home


# --------------------------------------------------------------------------- fast CLI check


def test_dagster_definitions_validate_exits_zero(tmp_path: Path):
    dagster_home, churn_home = _new_homes(tmp_path)
    out = subprocess.run(
        [_bin("dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=_platform_env(dagster_home, churn_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Validation successful for code location churn_platform" in out.stdout + out.stderr


# --------------------------------------------------------------------------- the UI


@dataclass
class UiRun:
    """The webserver's address and what the real run recorded (to compare with the pages)."""

    base_url: str
    check_metadata: dict[tuple[str, str], dict[str, Any]]
    report_metadata: dict[str, Any]
    shots: Path


@pytest.fixture(scope="module")
def ui_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiRun]:
    """Run the graph through evaluation_report on a persistent instance, then serve it."""
    root = tmp_path_factory.mktemp("ui")
    dagster_home, churn_home = _new_homes(root)
    shots = Path(os.environ.get("CHURN_UI_SCREENSHOTS") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for var in CLEARED_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        mp.setenv("CHURN_HOME", str(churn_home))
        with dg.DagsterInstance.get() as instance:  # reads $DAGSTER_HOME/dagster.yaml
            result = materialize(
                THROUGH_EVALUATION,
                instance,
                {
                    "challenger_model": {"config": FAST_MODEL},
                    "evaluation_report": {"config": FAST_GATE},
                },
            )
            assert result.success, step_error(result)
            report = instance.get_latest_materialization_event(
                dg.AssetKey("evaluation_report")
            ).asset_materialization
            report_metadata = {k: v.value for k, v in report.metadata.items()}
    check_metadata = {
        key: {k: v.value for k, v in data.metadata.items()} for key, data in checks(result).items()
    }

    with dagster_webserver(
        _platform_env(dagster_home, churn_home), root / "webserver.log"
    ) as base_url:
        yield UiRun(base_url, check_metadata, report_metadata, shots)


@pytest.fixture(scope="module")
def browser(ui_run: UiRun):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_run: UiRun, request: pytest.FixtureRequest):
    """A fresh tab; its last state is saved as `<test name>.final.png` whatever the outcome."""
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    try:
        tab.screenshot(path=str(ui_run.shots / f"{request.node.name}.final.png"), full_page=True)
    finally:
        context.close()


def _open(page, ui_run: UiRun, path: str, ready_text: str) -> None:
    """Go to a UI route and wait until ``ready_text`` is rendered (the app loads data async)."""
    from playwright.sync_api import expect

    page.goto(ui_run.base_url + path, wait_until="domcontentloaded")
    expect(page.get_by_text(ready_text, exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")


def _shot(page, ui_run: UiRun, name: str, full_page: bool = True) -> Path:
    path = ui_run.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _text_once(locator, ready: Any, what: str) -> str:
    """``locator``'s text once ``ready(text)`` holds: the app fills rows in after the page loaded.

    Polls the rendered text (a condition, not a sleep) for up to ``TIMEOUT_MS``; fails with what
    was expected and the last text seen.
    """
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        text = locator.inner_text()
        if ready(text):
            return text
        assert time.monotonic() < deadline, (
            f"not shown within {TIMEOUT_MS} ms: {what}\n{text[:3000]}"
        )
        locator.page.wait_for_timeout(250)


def _check_list_status(body_text: str, check: str) -> str | None:
    """The status shown beside ``check`` in an asset's check list (None when not listed)."""
    found = re.search(rf"(?m)^{re.escape(check)}\n(?:{re.escape(check)}\n)?(\w[\w ]*)$", body_text)
    return found.group(1) if found else None


def _check_detail_text(page, check: str, last_key: str) -> str:
    """The rendered text of the selected check's detail panel, once it shows ``last_key``.

    The panel's heading, its result and its metadata table arrive separately: wait for the
    result and the metadata key read last, not for the page.
    """
    from playwright.sync_api import expect

    panel = page.get_by_text("Evaluation result", exact=True).locator(
        "xpath=ancestor::div[.//*[normalize-space(text())='Execution history']][1]"
    )
    expect(panel).to_be_visible()
    expect(panel).to_contain_text(check)
    text = _text_once(
        panel,
        lambda text: (
            re.search(r"Evaluation result\s+(Passed|Failed)", text) is not None
            and re.search(rf"(?m)^{re.escape(last_key)}\s*$", text) is not None
        ),
        f"the result of {check} and its metadata key {last_key}",
    )
    assert text.lstrip().startswith(check), f"the detail panel shows another check:\n{text[:300]}"
    return text


def _number_after(label: str, text: str) -> float:
    found = re.search(rf"(?m)^{re.escape(label)}\s*\n\s*(-?\d+(?:\.\d+)?)\s*$", text)
    assert found, f"no number under '{label}' in:\n{text[:2000]}"
    return float(found.group(1))


@needs_chromium
def test_group_churn_lists_all_seven_assets_with_their_status(page, ui_run: UiRun):
    _open(page, ui_run, f"/locations/{LOCATION}/asset-groups/{GROUP}/list", "churn_snapshot")
    assert "Asset Group in" in page.inner_text("body")
    from playwright.sync_api import expect

    shown = {}
    for name in ASSET_NAMES:
        link = page.locator(f"a[href='/assets/{name}']").first
        # the row: the nearest ancestor that also holds the asset's group link
        row = link.locator("xpath=ancestor::div[.//a[starts-with(@href, '/asset-groups')]][1]")
        # the status arrives after the row (a second query): wait for it, not for the page;
        # the weekly data shows its partitions' counts instead
        status = r"\d+ partitions" if name in WEEKLY else "Materialized|Never materialized"
        expect(row).to_contain_text(re.compile(status))
        text = row.inner_text()
        assert re.search(rf"(?m)^{GROUP}$", text), f"{name}: group '{GROUP}' not shown in\n{text}"
        shown[name] = "Never materialized" if "Never materialized" in text else text
    _shot(page, ui_run, "01_group_churn_list")
    assert len(shown) == 7
    for name in THROUGH_EVALUATION:
        if name not in WEEKLY:
            assert "Materialized" in shown[name] and "Never" not in shown[name], (name, shown[name])
    assert shown["staging_deployment"] == shown["production_deployment"] == "Never materialized"

    # the lineage view of the same group draws the graph (labels may be truncated there)
    _open(page, ui_run, f"/locations/{LOCATION}/asset-groups/{GROUP}", "churn_snapshot")
    for name in ("churn_snapshot", "holdout_set", "challenger_model", "evaluation_report"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    _shot(page, ui_run, "02_group_churn_lineage", full_page=False)


@needs_chromium
def test_contract_checks_of_validated_data_are_listed_as_passed(page, ui_run: UiRun):
    _open(
        page,
        ui_run,
        "/assets/validated_churn_data?view=checks&checkDetail=customer_id_unique",
        "Evaluation result",
    )
    rules = [rule.name for rule in contract.contract_rules(spec=default_spec())]
    body = _text_once(
        page.locator("body"),
        # while loading, the line under a check is the next check's name, not a status
        lambda text: (
            f"Checks ({len(rules)})" in text
            and all(_check_list_status(text, rule) == "Succeeded" for rule in rules)
        ),
        f"Checks ({len(rules)}), each Succeeded",
    )
    statuses = {rule: _check_list_status(body, rule) for rule in rules}
    assert statuses == dict.fromkeys(rules, "Succeeded"), statuses
    detail = _check_detail_text(page, "customer_id_unique", "failing_rows")
    assert re.search(r"Evaluation result\s+Passed", detail), detail[:1000]
    assert "This is a blocking asset check." in detail
    assert _number_after("failing_rows", detail) == 0
    _shot(page, ui_run, "03_validated_churn_data_checks")


@needs_chromium
def test_model_checks_show_holdout_auc_with_its_interval(page, ui_run: UiRun):
    _open(
        page,
        ui_run,
        "/assets/challenger_model?view=checks&checkDetail=holdout_auc",
        "Evaluation result",
    )
    model_checks = ("feature_invariants", "holdout_auc", "slice_auc", "contract_invariance",
                    "prediction_coverage")  # fmt: skip
    body = _text_once(
        page.locator("body"),
        lambda text: all(_check_list_status(text, check) == "Succeeded" for check in model_checks),
        f"Succeeded beside each of {model_checks}",
    )
    for check in model_checks:
        assert _check_list_status(body, check) == "Succeeded", (check, body[:3000])
    detail = _check_detail_text(page, "holdout_auc", "auc_ci_upper")
    assert re.search(r"Evaluation result\s+Passed", detail), detail[:1000]
    recorded = ui_run.check_metadata[("challenger_model", "holdout_auc")]
    lower, auc, upper = (_number_after(k, detail) for k in ("auc_ci_lower", "auc", "auc_ci_upper"))
    assert lower < auc < upper
    assert lower == pytest.approx(recorded["auc_ci_lower"], abs=1e-4)
    assert upper == pytest.approx(recorded["auc_ci_upper"], abs=1e-4)
    assert "95% CI" in detail  # the human summary states the interval too
    _shot(page, ui_run, "04_challenger_model_holdout_auc")


@needs_chromium
def test_evaluation_report_shows_decision_and_embedded_plots(page, ui_run: UiRun):
    from playwright.sync_api import expect

    decision = ui_run.report_metadata["decision"]
    verdict = "PROMOTE the challenger" if decision == "promote" else "KEEP the champion"
    _open(page, ui_run, "/assets/evaluation_report", "Metadata")
    overview = page.inner_text("body")
    assert re.search(rf"decision\s+.*\s+{decision}\b", overview), overview[:3000]

    # the report is markdown metadata: the overview shows a "[Show Markdown]" button per entry
    report_row = (
        page.locator("tr")
        .filter(has=page.get_by_text("report", exact=True))
        .filter(has=page.get_by_text("[Show Markdown]"))
    )
    expect(report_row).to_have_count(1)
    report_row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name=f"Evaluation report: {verdict}")).to_be_visible()
    expect(dialog).to_contain_text(f"Decision: {verdict}.")
    expect(dialog).to_contain_text(str(ui_run.report_metadata["reason"]))
    expect(dialog.get_by_role("heading", name="Slices")).to_be_visible()
    _shot(page, ui_run, "05_evaluation_report_markdown", full_page=False)

    images = dialog.locator("img")
    expect(images).to_have_count(2)  # ROC and calibration, base64 PNG in the markdown
    for image in images.all():
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible()
        assert (image.get_attribute("src") or "").startswith("data:image/png;base64,")
        page.wait_for_function("img => img.complete", arg=image.element_handle())
        width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert width > 100 and height > 100, "the embedded PNG did not decode"
    images.first.scroll_into_view_if_needed()
    _shot(page, ui_run, "06_evaluation_report_roc_plot", full_page=False)


@needs_chromium
def test_schedule_and_drift_sensor_are_listed(page, ui_run: UiRun):
    from playwright.sync_api import expect

    _open(page, ui_run, "/automation", "weekly_retraining")
    expect(page.get_by_text("psi_drift_sensor", exact=True)).to_be_visible()
    expect(page.get_by_text("Scheduled At 02:00 AM UTC, only on Monday")).to_be_visible()
    _shot(page, ui_run, "07_automation")

    _open(page, ui_run, f"/locations/{LOCATION}/schedules/weekly_retraining", "Next tick")
    body = page.inner_text("body")
    assert "0 2 * * 1" in body and "churn_retraining" in body
    _open(page, ui_run, f"/locations/{LOCATION}/sensors/psi_drift_sensor", "Cursor")
    body = page.inner_text("body")
    assert "PSI" in body and "churn_retraining" in body
    _shot(page, ui_run, "08_psi_drift_sensor")
