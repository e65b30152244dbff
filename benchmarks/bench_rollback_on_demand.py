"""Rollback on demand (issue 14): how long ``core.release.rollback`` takes on real processes.

* **warm**: both versions run (N-1 kept at 0%); the rollback is a weight change and two alias moves.
* **cold**: the version to go back to was retired; it is started from the MLflow registry first
  (a model-server process loading the pipeline), then traffic moves.

Targets from the issue: warm < 2 s, cold < 60 s. The peer is the release canary's own automatic
rollback (``bench_rollback.py``), which needs a running canary; before this command a person
had no way back after 100% at all. Real model servers and the real router on 127.0.0.1, a
registry of two versions in a SQLite MLflow store; the aliases live in memory (an MLflow alias
move is a few ms and is measured by the pipeline tests).

Run:  .venv/bin/python benchmarks/bench_rollback_on_demand.py [--trials N]
Writes benchmarks/results/bench_rollback_on_demand.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core import records as r  # noqa: E402
from churn_platform.core.release import rollback  # noqa: E402
from churn_platform.targets.local import LocalProcessTarget  # noqa: E402
from churn_platform.testing import RegisteredModels, make_registered_models  # noqa: E402


class MemoryAliases:
    """The ``ModelRegistry`` protocol: aliases in a dict, model URIs from the real store."""

    def __init__(self, models: RegisteredModels, **aliases: str) -> None:
        self.models, self.aliases = models, dict(aliases)

    def alias_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        self.aliases[alias] = version

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        pass

    def model_uri(self, version: str) -> str:
        return self.models.model_uris[version]


def trial(models: RegisteredModels, root: Path) -> tuple[float, float]:
    """One cold then one warm rollback; their seconds."""
    target = LocalProcessTarget(root / "deployments", models.tracking_uri)
    try:
        target.deploy(r.PRODUCTION, "2", models.model_uris["2"])
        target.set_weights(r.PRODUCTION, {"2": 100})
        registry = MemoryAliases(models, **{r.CHAMPION: "2", r.PREVIOUS: "1"})
        started = time.monotonic()
        rollback(target, registry, reason="bench: cold", sleep=lambda s: None)
        cold = time.monotonic() - started
        assert target.state(r.PRODUCTION).weights() == {"1": 100, "2": 0}
        started = time.monotonic()
        rollback(target, registry, reason="bench: warm", sleep=lambda s: None)
        warm = time.monotonic() - started
        assert target.state(r.PRODUCTION).weights() == {"1": 0, "2": 100}
        return cold, warm
    finally:
        target.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", default=str(common.result_path(__file__)))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = make_registered_models(Path(tmp) / "mlflow")
        results = [trial(models, Path(tmp) / f"t{i}") for i in range(args.trials)]
    cold = [c for c, _ in results]
    warm = [w for _, w in results]
    text = "\n".join(
        [
            "# Rollback on demand: cold (restart from the registry) and warm (weight change)",
            "",
            f"{common.utc_now()}; {common.machine(load=True)}",
            f"Command: `{common.command_line(__file__)}`",
            "",
            "| rollback | median s | max s | target |",
            "|---|---|---|---|",
            f"| warm (both versions running) | {statistics.median(warm):.3f} | {max(warm):.3f} | < 2 s |",
            f"| cold (version started from the registry) | {statistics.median(cold):.2f} | {max(cold):.2f} | < 60 s |",
            "",
            f"{args.trials} trials. Peer: the canary's automatic rollback "
            "(`bench_rollback.py`) switches weights in ~40 ms once it has decided; before "
            "`python -m churn_platform rollback` there was no rollback after 100%.",
            "",
        ]
    )
    common.write_result(args.out, text, announce=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
