"""``python -m churn_platform rollback [--to VERSION] [--reason TEXT]``: production back to
the ``previous`` version (or the named one) now, without a canary.

It runs the ``churn_rollback`` job, which materialises ``production_deployment`` in
rollback mode, so the rollback is in the asset's history in the UI like any release: all
traffic to the version (started from the registry first when it no longer runs), then
``champion`` <- that version and ``previous`` <- the old champion, with the reason in the
metadata and on the old champion's ``deployment`` tag. Also the repair when traffic and
aliases disagree: ``--to`` the version the router serves.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "put production back on the previous version (or --to VERSION) now, aliases swapped"
JOB = "churn_rollback"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rollback`` subcommand's options."""
    parser.add_argument("--to", dest="to_version", default="", help="default: the previous alias")
    parser.add_argument("--reason", default="", help="why (recorded in the metadata and tags)")
    parser.add_argument("--verbose", action="store_true", help="print Dagster's step logs too")
    parser.add_argument("--model", help="which model of the platform file (default: first)")


def run_config(
    to_version: str = "", reason: str = "", op: str = "production_deployment"
) -> dict[str, Any]:
    """The rollback job's run config (``op``: the model's production_deployment op name)."""
    config = {"mode": "rollback", "to_version": to_version, "reason": reason}
    return {"ops": {op: {"config": config}}}


def run_from_args(args: argparse.Namespace) -> int:
    """Run the rollback job and print the summary; 0 on success."""
    from churn_platform import cli
    from churn_platform.config import load_config

    reason = args.reason or "rollback on demand (python -m churn_platform rollback)"
    try:
        op = load_config().model(args.model).op("production_deployment")
    except ValueError as exc:
        print(f"configuration error: {exc}")
        return 2
    config = run_config(str(args.to_version or ""), reason, op)
    return cli.run("rollback", None, args.verbose, run_config=config, model_name=args.model)
