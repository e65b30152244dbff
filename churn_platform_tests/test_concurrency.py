"""One deployment at a time: the instance config in deploy/local/dagster.yaml limits the
`churn_deployment` pool (both deployment assets) to one step across runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg

from churn_platform.definitions import build_definitions
from churn_platform.defs.deployment import DEPLOYMENT_POOL

REPO = Path(__file__).resolve().parent.parent
STEP = textwrap.dedent(
    """
    import json, sys, time
    import dagster as dg

    @dg.asset(pool=sys.argv[2])
    def deployment_step():
        start = time.time()
        time.sleep(3)
        print(json.dumps([start, time.time()]), flush=True)

    defs = dg.Definitions(assets=[deployment_step], jobs=[dg.define_asset_job("j", "*")])
    with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
        assert defs.resolve_job_def("j").execute_in_process(instance=instance).success
    """
)


def spans_of_two_concurrent_runs(home: Path, pool: str) -> list[list[float]]:
    """Start two runs of a 3 s step in ``pool`` at once, in two processes; their step spans."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STEP, str(home), pool], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        spans.append(json.loads(out.strip().splitlines()[-1]))
    return sorted(spans)


def test_deployment_assets_share_the_limited_pool(tmp_path: Path, churn_home: Path):
    defs = build_definitions()
    for name in ("staging_deployment", "production_deployment"):
        assert defs.resolve_assets_def(name).op.pool == DEPLOYMENT_POOL
    shutil.copy(REPO / "deploy/local/dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

    first, second = spans_of_two_concurrent_runs(tmp_path, DEPLOYMENT_POOL)
    assert second[0] >= first[1] - 0.05, (first, second)  # the second waited for the slot


def test_without_the_limit_the_same_runs_overlap(tmp_path: Path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # create the storage once
        assert instance.get_concurrency_config().pool_config.default_pool_limit is None
    first, second = spans_of_two_concurrent_runs(tmp_path, DEPLOYMENT_POOL)
    assert second[0] < first[1]  # control: the serialisation above comes from the pool limit
