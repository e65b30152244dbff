"""Launch a platform job on a running Dagster through its GraphQL API (the CI trigger).

    python -m churn_platform trigger --url http://dagster:3000 --reason code --commit $SHA
    python -m churn_platform.trigger --url ... (the same, without the package CLI)

The run is submitted with ``dagster_graphql.DagsterGraphQLClient.submit_job_execution``
(the ``launchPipelineExecution`` mutation) and tagged ``churn/trigger=<reason>`` and
``churn/commit=<sha>``, so the Runs page filters CI-started runs by tag, beside the
schedule's and the drift sensor's. Prints the run id and the run's URL.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HELP", "TriggerError", "Launched", "add_arguments", "launch", "main", "run_from_args"]

HELP = "launch churn_retraining (or --job) on a running Dagster through its GraphQL API"
DEFAULT_JOB = "churn_retraining"
DEFAULT_LOCATION = "churn_platform"  # workspace.yaml's location_name
REASONS = ("code", "data", "manual", "schedule")


class TriggerError(RuntimeError):
    """The run could not be launched; the message names the URL, job and cause."""


@dataclass(frozen=True)
class Launched:
    """A submitted run: its id, its page in the UI and the tags it carries."""

    run_id: str
    run_url: str
    tags: dict[str, str]


def launch(
    url: str,
    *,
    reason: str,
    commit: str = "",
    job: str = DEFAULT_JOB,
    location: str = DEFAULT_LOCATION,
    extra_tags: dict[str, str] | None = None,
    timeout: int = 60,
) -> Launched:
    """Submit ``job`` on the Dagster webserver at ``url``; return the run id and its URL."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TriggerError(
            f"--url {url!r} is not a Dagster webserver URL: give e.g. http://127.0.0.1:3000"
        )
    if reason not in REASONS:
        raise TriggerError(f"--reason {reason!r} is not one of {', '.join(REASONS)}")
    tags = {"churn/trigger": reason, **(extra_tags or {})}
    if commit:
        tags["churn/commit"] = commit
    client = DagsterGraphQLClient(
        parts.hostname,
        port_number=parts.port,
        use_https=parts.scheme == "https",
        path_prefix=parts.path.rstrip("/"),
        timeout=timeout,
    )
    try:
        run_id = client.submit_job_execution(
            job, repository_location_name=location or None, tags=tags
        )
    except DagsterGraphQLClientError as exc:
        cause = exc.__cause__
        if cause is not None:
            # the client wraps transport errors in a message quoting the whole query
            raise TriggerError(
                f"launching {job} on {url} failed: {type(cause).__name__}: {cause}; is the "
                "Dagster webserver running there?"
            ) from exc
        detail = f"{exc}" + (f" ({exc.body})" if getattr(exc, "body", None) else "")
        raise TriggerError(
            f"launching {job} on {url} (location {location!r}) failed: {detail}"
        ) from exc
    except Exception as exc:  # transport: connection refused, timeout, TLS
        raise TriggerError(
            f"launching {job} on {url} failed: {type(exc).__name__}: {exc}; is the Dagster "
            "webserver running there?"
        ) from exc
    return Launched(run_id, f"{url.rstrip('/')}/runs/{run_id}", tags)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``trigger`` options (shared by ``python -m churn_platform trigger``)."""
    parser.add_argument(
        "--url", required=True, help="the Dagster webserver, e.g. http://dagster:3000"
    )
    parser.add_argument("--reason", required=True, choices=REASONS, help="the churn/trigger tag")
    parser.add_argument("--commit", default="", help="the commit SHA (tag churn/commit)")
    parser.add_argument("--job", default=DEFAULT_JOB)
    parser.add_argument("--location", default=DEFAULT_LOCATION, help="code location name")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="more run tags"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Launch from parsed ``add_arguments`` options; print the run; 0 on success."""
    extra: dict[str, str] = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"--tag {item!r}: give KEY=VALUE", file=sys.stderr)
            return 2
        extra[key] = value
    try:
        launched = launch(
            args.url,
            reason=args.reason,
            commit=args.commit,
            job=args.job,
            location=args.location,
            extra_tags=extra,
        )
    except TriggerError as exc:
        print(f"trigger: {exc}", file=sys.stderr)
        return 1
    print(f"launched {args.job} run {launched.run_id}: {launched.run_url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m churn_platform.trigger``."""
    parser = argparse.ArgumentParser(prog="python -m churn_platform trigger", description=HELP)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
