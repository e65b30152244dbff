"""Launch a platform job on a running Dagster through its GraphQL API (the CI trigger).

    python -m churn_platform trigger --url http://dagster:3000 --reason code --commit $SHA \
        --header "Authorization: Bearer $TOKEN"
    python -m churn_platform.trigger --url ... (the same, without the package CLI)

The run is submitted with ``dagster_graphql.DagsterGraphQLClient.submit_job_execution``
(the ``launchPipelineExecution`` mutation) and tagged ``churn/trigger=<reason>`` and
``churn/commit=<sha>``, so the Runs page filters CI-started runs by tag, beside the
schedule's and the drift sensor's. Prints the run id and the run's URL. ``--header`` (any
number) is sent with every request, for a webserver behind an authenticating proxy.

With ``--commit`` (CI: one push) the trigger first checks and then keeps one run per push:

- the code location must run that commit: it reports the commit it loaded as its
  ``code_version`` resource's ``commit``; a location on another commit (the deployment has
  not rolled out yet) is refused, nothing is launched;
- a run of the job tagged with that commit that did not fail already exists (a re-run of
  the CI job): nothing is launched, the run is printed;
- ``code_version_sensor`` also retrains when a deployment changes the training code: when it
  already launched a run for the location's code version since the location loaded, nothing
  is launched; otherwise its cursor is set to that code version before the launch, which the
  sensor reads as "a retraining for this code was already requested", and the run is tagged
  ``churn/code_version``. A sensor tick already under way at that instant may still launch
  (seconds); every other push gets one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HELP", "TriggerError", "Launched", "add_arguments", "launch", "main", "run_from_args"]

HELP = "launch churn_retraining (or --job) on a running Dagster through its GraphQL API"
DEFAULT_JOB = "churn_retraining"
DEFAULT_LOCATION = "churn_platform"  # workspace.yaml's location_name
REASONS = ("code", "data", "manual", "schedule")
REPOSITORY = "__repository__"  # the repository name of a location's dg.Definitions
CODE_RESOURCE = "code_version"  # the resource whose `commit` is the commit the location loaded
CODE_SENSOR = "code_version_sensor"  # retrains on a new code version of CODE_ASSET
CODE_ASSET = "challenger_model"
COMMIT_TAG = "churn/commit"
CODE_VERSION_TAG = "churn/code_version"  # the sensor's runs carry it too
SENSOR_TAG = "dagster/sensor_name"
NOT_FAILED = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS"]

LOCATION_QUERY = """
query Location($repo: RepositorySelector!, $sensor: SensorSelector!, $asset: AssetKeyInput!) {
  workspaceOrError { ... on Workspace { locationEntries { name updatedTimestamp } } }
  repositoryOrError(repositorySelector: $repo) {
    __typename
    ... on Repository { allTopLevelResourceDetails { name configuredValues { key value } } }
  }
  sensorOrError(sensorSelector: $sensor) { __typename }
  assetNodes(assetKeys: [$asset]) { opVersion }
}"""
RUNS_QUERY = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 1) { ... on Runs { results { runId status } } }
}"""
SET_CURSOR = """
mutation Claim($sensor: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $sensor, cursor: $cursor) {
    __typename ... on PythonError { message }
  }
}"""


class TriggerError(RuntimeError):
    """The run could not be launched; the message names the URL, job and cause."""


@dataclass(frozen=True)
class Launched:
    """A run of the push: its id, its page in the UI and the tags it carries; ``new`` is
    False when the run already existed and nothing was launched (``note`` says why)."""

    run_id: str
    run_url: str
    tags: dict[str, str]
    new: bool = True
    note: str = ""


@dataclass(frozen=True)
class _Location:
    """What a code location reports: the commit it loaded, the training code version, when
    it loaded, and whether it has the code-version sensor."""

    commit: str
    code_version: str
    loaded_at: float
    has_sensor: bool


class _Dagster:
    """GraphQL requests to one webserver, with the caller's headers."""

    def __init__(self, url: str, headers: dict[str, str], timeout: int) -> None:
        self.url, self.headers, self.timeout = url, headers, timeout

    def query(self, text: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/graphql",
            body,
            {"Content-Type": "application/json", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                document = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            hint = " (pass --header 'Authorization: ...')" if exc.code in (401, 403) else ""
            raise TriggerError(f"{self.url} answered {exc.code} {exc.reason}{hint}") from exc
        except (OSError, ValueError) as exc:
            raise TriggerError(
                f"{self.url}: {type(exc).__name__}: {exc}; is the Dagster webserver running there?"
            ) from exc
        if document.get("errors"):
            raise TriggerError(f"{self.url} refused a query: {document['errors'][0]}")
        return document["data"]

    def location(self, location: str) -> _Location:
        repo = {"repositoryLocationName": location, "repositoryName": REPOSITORY}
        data = self.query(
            LOCATION_QUERY,
            repo=repo,
            sensor={**repo, "sensorName": CODE_SENSOR},
            asset={"path": [CODE_ASSET]},
        )
        entries = (data["workspaceOrError"] or {}).get("locationEntries") or []
        loaded = [e["updatedTimestamp"] for e in entries if e["name"] == location]
        repository = data["repositoryOrError"]
        if not loaded or repository["__typename"] != "Repository":
            raise TriggerError(f"{self.url} has no code location {location!r} loaded")
        commit = ""
        for resource in repository["allTopLevelResourceDetails"]:
            for item in resource["configuredValues"] if resource["name"] == CODE_RESOURCE else []:
                commit = json.loads(item["value"]) if item["key"] == "commit" else commit
        nodes = data["assetNodes"]
        return _Location(
            commit=str(commit),
            code_version=(nodes[0]["opVersion"] or "") if nodes else "",
            loaded_at=float(loaded[0]),
            has_sensor=data["sensorOrError"]["__typename"] == "Sensor",
        )

    def first_run(self, job: str, tags: dict[str, str], **extra: Any) -> str | None:
        tag_list = [{"key": k, "value": v} for k, v in tags.items()]
        data = self.query(
            RUNS_QUERY,
            filter={"pipelineName": job, "tags": tag_list, "statuses": NOT_FAILED, **extra},
        )
        results = (data["runsOrError"] or {}).get("results") or []
        return results[0]["runId"] if results else None

    def claim_sensor(self, location: str, cursor: str) -> None:
        sensor = {
            "repositoryLocationName": location,
            "repositoryName": REPOSITORY,
            "sensorName": CODE_SENSOR,
        }
        answer = self.query(SET_CURSOR, sensor=sensor, cursor=cursor)["setSensorCursor"]
        if answer["__typename"] != "Sensor":
            raise TriggerError(f"setting {CODE_SENSOR}'s cursor failed: {answer}")


def _same_commit(a: str, b: str) -> bool:
    """Equal commits, a short SHA (7+ characters) matching a full one."""
    short, full = sorted((a.lower(), b.lower()), key=len)
    return len(short) >= 7 and full.startswith(short)


def _existing_run_of_the_push(
    dagster: _Dagster, job: str, location: str, commit: str, tags: dict[str, str]
) -> tuple[str, str] | None:
    """(run id, why) of the run this push already has; else claim the sensor and tag
    ``tags`` with the code version the run trains (see the module docstring)."""
    where = dagster.location(location)
    if not _same_commit(where.commit, commit):
        raise TriggerError(
            f"the code location {location!r} at {dagster.url} runs commit "
            f"{where.commit or '(none reported)'}, not {commit}: nothing launched. Deploy "
            f"{commit} (or wait for its rollout) and trigger again; a location without git "
            "reports the commit from GIT_COMMIT"
        )
    run_id = dagster.first_run(job, {COMMIT_TAG: commit})
    if run_id:
        return run_id, f"a {job} run for commit {commit} already exists"
    if where.has_sensor and where.code_version:
        run_id = dagster.first_run(
            job,
            {SENSOR_TAG: CODE_SENSOR, CODE_VERSION_TAG: where.code_version},
            createdAfter=where.loaded_at,
        )
        if run_id:
            return run_id, f"{CODE_SENSOR} already launched it for code {where.code_version}"
        dagster.claim_sensor(location, where.code_version)
    if where.code_version:
        tags[CODE_VERSION_TAG] = where.code_version
    return None


def launch(
    url: str,
    *,
    reason: str,
    commit: str = "",
    job: str = DEFAULT_JOB,
    location: str = DEFAULT_LOCATION,
    extra_tags: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: int = 60,
) -> Launched:
    """Submit ``job`` on the Dagster webserver at ``url``; return the run id and its URL.
    With ``commit``, the location must run it and a push gets one run (module docstring);
    ``headers`` go with every request."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TriggerError(
            f"--url {url!r} is not a Dagster webserver URL: give e.g. http://127.0.0.1:3000"
        )
    if reason not in REASONS:
        raise TriggerError(f"--reason {reason!r} is not one of {', '.join(REASONS)}")
    tags = {"churn/trigger": reason, **(extra_tags or {})}
    run_url = f"{url.rstrip('/')}/runs/"
    if commit:
        tags[COMMIT_TAG] = commit
        dagster = _Dagster(url, headers or {}, timeout)
        existing = _existing_run_of_the_push(dagster, job, location, commit, tags)
        if existing:
            run_id, why = existing
            return Launched(run_id, run_url + run_id, tags, new=False, note=why)
    try:
        client = DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            path_prefix=parts.path.rstrip("/"),
            timeout=timeout,
            headers=headers or None,
        )
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
    except Exception as exc:  # transport: connection refused, timeout, TLS, 401
        raise TriggerError(
            f"launching {job} on {url} failed: {type(exc).__name__}: {exc}; is the Dagster "
            "webserver running there?"
        ) from exc
    return Launched(run_id, run_url + run_id, tags)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``trigger`` options (shared by ``python -m churn_platform trigger``)."""
    parser.add_argument(
        "--url", required=True, help="the Dagster webserver, e.g. http://dagster:3000"
    )
    parser.add_argument("--reason", required=True, choices=REASONS, help="the churn/trigger tag")
    parser.add_argument(
        "--commit",
        default="",
        help="the commit SHA (tag churn/commit); the code location must run it, and a commit "
        "gets one run",
    )
    parser.add_argument("--job", default=DEFAULT_JOB)
    parser.add_argument("--location", default=DEFAULT_LOCATION, help="code location name")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="more run tags"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header for every request, e.g. 'Authorization: Bearer <token>' (repeatable)",
    )


def _pairs(items: list[str], sep: str, option: str) -> dict[str, str] | None:
    """``KEY<sep>VALUE`` items as a dict; None (after saying so) when one has no key."""
    pairs: dict[str, str] = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            print(f"{option} {item!r}: give KEY{sep}VALUE", file=sys.stderr)
            return None
        pairs[key.strip()] = value.strip() if sep == ":" else value
    return pairs


def run_from_args(args: argparse.Namespace) -> int:
    """Launch from parsed ``add_arguments`` options; print the run; 0 on success."""
    extra = _pairs(args.tag, "=", "--tag")
    headers = _pairs(args.header, ":", "--header")
    if extra is None or headers is None:
        return 2
    try:
        launched = launch(
            args.url,
            reason=args.reason,
            commit=args.commit,
            job=args.job,
            location=args.location,
            extra_tags=extra,
            headers=headers,
        )
    except TriggerError as exc:
        print(f"trigger: {exc}", file=sys.stderr)
        return 1
    if not launched.new:
        print(f"nothing launched: {launched.note}: run {launched.run_id}: {launched.run_url}")
        return 0
    print(f"launched {args.job} run {launched.run_id}: {launched.run_url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m churn_platform.trigger``."""
    parser = argparse.ArgumentParser(prog="python -m churn_platform trigger", description=HELP)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
