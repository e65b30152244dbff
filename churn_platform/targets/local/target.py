"""``LocalProcessTarget``: model versions as detached processes on 127.0.0.1 behind a router.

Composed of a ``StateStore`` (``state.py``: the per-environment state files and their
lock), a ``Supervisor`` (``supervisor.py``: starting one server process and waiting for its
health), a ``RouterManager`` (``router.py``: the weighted router per environment and its
table) and ``FileSdTargets`` (``prometheus.py``: the Prometheus file_sd listings, rewritten
after every change). ``stop_all`` or ``python -m churn_platform.serving stop`` ends the
processes, which otherwise outlive the run that started them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from churn_platform.core.rollout import EnvironmentState, ServedVersion, ShadowObservations
from churn_platform.serving.inference_log import inference_log_file, remove_inference_log
from churn_platform.targets.local.process import bind_socket, is_running, stop_process
from churn_platform.targets.local.prometheus import FileSdTargets
from churn_platform.targets.local.router import RouterManager
from churn_platform.targets.local.state import StateStore, version_key
from churn_platform.targets.local.supervisor import Supervisor

__all__ = ["LocalProcessTarget"]


class LocalProcessTarget:
    """``DeploymentTarget`` running each model version as a uvicorn process on this machine.

    ``state_dir``: where the state files live (None: ``$CHURN_HOME/deployments``, resolved
    by ``settings``). ``router_ports`` maps environment to the router's port (0 or absent:
    a free port, kept across restarts once chosen). ``base_env`` is every child's base
    environment (None: inherit this process's); ``server_env`` is added to every model
    server's; ``deploy(..., extra_env=...)`` to one server's (e.g. ``CHURN_FAULT_RATE``).
    """

    def __init__(
        self,
        state_dir: str | Path,
        tracking_uri: str | None = None,
        router_ports: Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        *,
        inference_log_dir: str | Path | None = None,
        server_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        health_timeout_seconds: float = 90.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.tracking_uri = tracking_uri
        self.host = host
        self.inference_log_dir = Path(inference_log_dir) if inference_log_dir else None
        self.server_env = dict(server_env or {})
        self.health_timeout_seconds = health_timeout_seconds
        self.store = StateStore(self.state_dir)
        self.supervisor = Supervisor(host, health_timeout_seconds, base_env)
        self.routers = RouterManager(self.store, self.supervisor, dict(router_ports or {}))
        self.file_sd = FileSdTargets(self.store, host)

    @property
    def router_ports(self) -> dict[str, int]:
        """Environment -> the router's configured port (0: a free one)."""
        return self.routers.router_ports

    # -------- files

    def state_file(self, environment: str) -> Path:
        """Where ``environment``'s processes are recorded."""
        return self.store.state_file(environment)

    @property
    def targets_file(self) -> Path:
        """The Prometheus file_sd JSON listing every running model server."""
        return self.file_sd.targets_file

    def environments(self) -> list[str]:
        """Environments that have a state file."""
        return self.store.environments()

    def write_prometheus_config(self, path: str | Path, scrape_interval: str = "1s") -> Path:
        """Write a Prometheus config (from ``deploy/local/prometheus.yml``) that discovers
        this target's servers through ``targets_file``."""
        return self.file_sd.write_config(path, scrape_interval)

    @contextlib.contextmanager
    def _locked(self, environment: str) -> Iterator[dict[str, Any]]:
        """Hold the environment's lock; yield its state dict and save it (and the file_sd
        listings) on exit, still under the lock."""
        with self.store.locked(environment) as state:
            try:
                yield state
            finally:
                self.store.save(environment, state)
                self.file_sd.write()

    # -------- DeploymentTarget

    def deploy(
        self,
        environment: str,
        version: str,
        model_uri: str,
        *,
        extra_env: Mapping[str, str] | None = None,
    ) -> ServedVersion:
        """Start ``version`` at 0% traffic and wait until healthy (no-op if it already runs)."""
        version = str(version)
        with self._locked(environment) as state:
            router = self.routers.ensure(environment, state)
            existing = state["versions"].get(version)
            if existing and is_running(existing["pid"]):
                if existing["model_uri"] != model_uri:
                    raise ValueError(
                        f"version {version} already runs in {environment} from "
                        f"{existing['model_uri']}, not {model_uri}; retire it first"
                    )
                return self._served(version, existing)
            self._start(environment, version, model_uri, state, extra_env)
            self.routers.push_table(router["url"], state)
            return self._served(version, state["versions"][version])

    def _start(
        self,
        environment: str,
        version: str,
        model_uri: str,
        state: dict[str, Any],
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """Start ``version``'s server, wait until healthy and record it in ``state`` (held
        locked by the caller) at its recorded weight (0 when new)."""
        existing = state["versions"].get(version)
        log_path = self.store.env_dir(environment) / "logs" / f"model-{version}.log"
        args = ["model-server", "--model-uri", model_uri, "--version", version]
        env: dict[str, str] = {**self.server_env, **(extra_env or {})}
        # the store its model URI resolves in, kept so `restore` (another process, maybe
        # with other settings) restarts the version from the same store
        tracking_uri = self.tracking_uri or (existing or {}).get("tracking_uri")
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        # each environment its own log: staging checks stay out of production's drift
        # input, and no two processes append to (and rotate) one file
        args += ["--environment", environment]
        log = self._inference_log(environment, version, existing)
        if log:
            args += ["--inference-log", log]
        record = self.supervisor.start(
            args,
            bind_socket(self.host, 0),
            log_path,
            "/health",
            lambda pid: f"model server for {model_uri} (version {version}, pid {pid})",
            env,
        )
        record.model_uri = model_uri
        record.weight = existing["weight"] if existing else 0
        state["versions"][version] = {
            **record.__dict__,
            "tracking_uri": tracking_uri or "",
            "inference_log": log,
        }

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        """Split traffic between running versions (percents summing to 100); versions not
        named get 0. Live: the router swaps its table between requests."""
        with self._locked(environment) as state:
            running = state["versions"]
            unknown = sorted(set(map(str, weights)) - set(running))
            if unknown:
                raise ValueError(
                    f"cannot route to version(s) {unknown} in {environment}: not running "
                    f"(running: {sorted(running) or 'none'}); deploy them first"
                )
            for v, w in weights.items():
                if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
                    raise ValueError(
                        f"weight of version {v} must be a whole percent 0..100, got {w!r}"
                    )
            if sum(weights.values()) != 100:
                raise ValueError(
                    f"weights must sum to 100, got {sum(weights.values())} from {weights}"
                )
            router = self.routers.ensure(environment, state)
            for v, rec in running.items():
                rec["weight"] = int(weights.get(v, 0))
            self.routers.push_table(router["url"], state)
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        """Running versions (dead processes are left out) and the router's URL."""
        state = self.store.read(environment)
        router = state.get("router")
        endpoint = router["url"] if router and is_running(router.get("pid")) else None
        versions = tuple(
            self._served(v, rec)
            for v, rec in sorted(state["versions"].items(), key=lambda kv: version_key(kv[0]))
            if is_running(rec.get("pid"))
        )
        return EnvironmentState(environment, endpoint, versions)

    def retire(self, environment: str, version: str) -> None:
        """Stop ``version``'s server and delete its inference log in ``environment`` (raw
        customer rows nobody reads once it is retired); it must carry 0% of the traffic."""
        version = str(version)
        with self._locked(environment) as state:
            rec = state["versions"].get(version)
            if rec is None:
                return
            if rec["weight"] and is_running(rec["pid"]):
                raise ValueError(
                    f"version {version} still carries {rec['weight']}% of {environment}'s "
                    "traffic; set_weights() it to 0 before retiring it"
                )
            del state["versions"][version]
            router = state.get("router")
            if router and is_running(router.get("pid")):
                self.routers.push_table(router["url"], state)
            stop_process(rec["pid"])
            if rec.get("inference_log"):
                remove_inference_log(Path(rec["inference_log"]))

    # -------- ShadowTarget

    def set_mirror(self, environment: str, version: str | None, percent: int = 100) -> None:
        """Have the router mirror ``percent`` of the requests to ``version`` (a running
        version, usually at 0%) with a fresh record; None stops mirroring. Clients are
        answered by the weights only."""
        with self._locked(environment) as state:
            router = state.get("router")
            if version is None:
                if router and is_running(router.get("pid")):
                    self.routers.put_mirror(router["url"], state, None, percent)
                return
            if str(version) not in state["versions"]:
                raise ValueError(
                    f"cannot mirror to version {version} in {environment}: not running "
                    f"(running: {sorted(state['versions']) or 'none'}); deploy it first"
                )
            router = self.routers.ensure(environment, state)
            self.routers.put_mirror(router["url"], state, str(version), percent)

    def shadow_observations(self, environment: str) -> ShadowObservations | None:
        """What the router's mirror session observed so far (None: no session or no
        router)."""
        state = self.store.read(environment)
        router = state.get("router")
        if not router or not is_running(router.get("pid")):
            return None
        record = self.routers.mirror_record(router["url"], state)
        if record is None:
            return None
        return ShadowObservations(
            version=str(record["version"]),
            requests=int(record["requests"]),
            candidate_errors=int(record["candidate_errors"]),
            champion_scores=tuple(record["champion_scores"]),
            candidate_scores=tuple(record["candidate_scores"]),
            champion_latency_seconds=tuple(record["champion_latency_seconds"]),
            candidate_latency_seconds=tuple(record["candidate_latency_seconds"]),
            dropped=int(record["dropped"]),
        )

    # -------- beyond the protocol

    def restore(self, environment: str) -> list[str]:
        """Bring ``environment`` back as its state file describes it: every recorded
        version that is not running is started again from its model URI at its recorded
        weight, and the router at its recorded port (so the endpoint URL stays the same).
        Returns what was repaired, one line each; a version that cannot start is reported
        and left out of the router's table."""
        state = self.store.read(environment)
        router = state.get("router")
        dead = {v: rec for v, rec in state["versions"].items() if not is_running(rec.get("pid"))}
        router_dead = router is not None and not is_running(router.get("pid"))
        if not dead and not router_dead:
            return []
        # the versions that carry traffic first: the endpoint answers as soon as they run
        order = sorted(dead.items(), key=lambda kv: (-kv[1]["weight"], version_key(kv[0])))
        lead = order[0] if order and order[0][1]["weight"] > 0 else None
        repairs = self._restore_front(environment, router_dead, lead)
        for version, rec in order[1:] if lead else order:
            try:
                served = self.deploy(environment, version, rec["model_uri"])
            except (RuntimeError, ValueError, OSError) as exc:
                with self._locked(environment) as locked:
                    locked["versions"].pop(version, None)
                repairs.append(f"v{version} of {environment} could not be restarted: {exc}")
                continue
            repairs.append(
                f"v{version} of {environment} was down; restarted at {served.url} "
                f"({served.weight}% of the traffic)"
            )
        with self._locked(environment) as locked:  # dead versions dropped: weights re-checked
            total = sum(rec["weight"] for rec in locked["versions"].values())
            if locked.get("router") and total == 100:
                self.routers.push_table(locked["router"]["url"], locked)
        return repairs

    def _restore_front(
        self, environment: str, router_dead: bool, lead: tuple[str, dict[str, Any]] | None
    ) -> list[str]:
        """Restart the router and the heaviest dead version together (two processes starting
        at once, so the endpoint answers after the slower one, not after both); the router's
        failure is raised, the version's reported. Returns the repair lines."""
        repairs: list[str] = []
        failure: list[BaseException] = []
        served: dict[str, Any] | None = None
        version = lead[0] if lead else ""
        with self._locked(environment) as locked:
            router = threading.Thread(
                target=lambda: _capture(failure, self.routers.ensure, environment, locked)
            )
            if router_dead:
                router.start()
            try:
                if lead is not None:
                    try:
                        self._start(environment, version, lead[1]["model_uri"], locked)
                        served = locked["versions"][version]
                    except (RuntimeError, ValueError, OSError) as exc:
                        repairs.append(f"v{version} of {environment} could not be restarted: {exc}")
            finally:  # the state is saved on leaving the lock: with the router recorded
                if router_dead:
                    router.join()
            if failure:
                raise failure[0]
            if lead is not None and served is None:
                locked["versions"].pop(version, None)  # after the join: the router read them
            if router_dead:
                url = locked["router"]["url"]
                repairs.insert(0, f"router of {environment} was down; restarted at {url}")
            if served is not None:
                repairs.append(
                    f"v{version} of {environment} was down; restarted at {served['url']} "
                    f"({served['weight']}% of the traffic)"
                )
                if locked.get("router"):
                    self.routers.push_table(locked["router"]["url"], locked)
        return repairs

    def down(self, environment: str) -> list[str]:
        """What ``environment``'s state file records that is not running, one line each
        (the router first, then the versions); empty when everything recorded runs."""
        state = self.store.read(environment)
        router = state.get("router")
        lines = []
        if router and not is_running(router.get("pid")):
            lines.append(
                f"router of {environment} (pid {router.get('pid')}, {router.get('url')}) "
                "is not running"
            )
        for version, rec in sorted(state["versions"].items(), key=lambda kv: version_key(kv[0])):
            if not is_running(rec.get("pid")):
                lines.append(
                    f"v{version} of {environment} (pid {rec.get('pid')}, {rec.get('weight', 0)}% "
                    "of the traffic) is not running"
                )
        return lines

    def live_weights(self, environment: str) -> dict[str, int] | None:
        """The weights the running router applies now (GET /-/weights), None when it is down."""
        endpoint = self.state(environment).endpoint
        return None if endpoint is None else self.routers.live_weights(endpoint)

    def prune(self, environment: str, keep: Iterable[str]) -> list[str]:
        """Retire every 0%-traffic version not in ``keep`` (e.g. keep the N-1 champion);
        return the retired versions."""
        keep_set = {str(v) for v in keep}
        retired = []
        for served in self.state(environment).versions:
            if served.weight == 0 and served.version not in keep_set:
                self.retire(environment, served.version)
                retired.append(served.version)
        return retired

    def health(self, environment: str, version: str) -> bool:
        """True if ``version``'s server answers 200 on /health."""
        rec = self.store.read(environment)["versions"].get(str(version))
        if not rec or not is_running(rec["pid"]):
            return False
        try:
            return httpx.get(rec["url"] + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_all(self, environment: str | None = None) -> list[int]:
        """Stop every process of ``environment`` (all environments when None) and forget
        their state; return the pids stopped."""
        stopped = []
        for env in [environment] if environment else self.environments():
            with self._locked(env) as state:
                records = list(state["versions"].values())
                if state.get("router"):
                    records.append(state["router"])
                for rec in records:
                    if is_running(rec.get("pid")):
                        stopped.append(rec["pid"])
                    stop_process(rec.get("pid"))
                state["versions"] = {}
                state["router"] = None
                with contextlib.suppress(FileNotFoundError):
                    (self.store.env_dir(env) / "router.json").unlink()
        return stopped

    def status(self) -> dict[str, Any]:
        """Every environment's recorded processes with a ``running`` flag (for the CLI)."""
        out: dict[str, Any] = {}
        for env in self.environments():
            state = self.store.read(env)
            router = state.get("router")
            if router:
                router = {**router, "running": is_running(router.get("pid"))}
            out[env] = {
                "router": router,
                "versions": {
                    v: {**rec, "running": is_running(rec.get("pid"))}
                    for v, rec in state["versions"].items()
                },
            }
        return out

    # -------- internals

    def _inference_log(
        self, environment: str, version: str, existing: Mapping[str, Any] | None
    ) -> str:
        """The log file ``version``'s server in ``environment`` writes: under
        ``inference_log_dir``, else the one recorded when it was first deployed (``restore``
        from another process), else "" (the server's default for its environment)."""
        if self.inference_log_dir:
            return str(inference_log_file(self.inference_log_dir, version, environment))
        return str((existing or {}).get("inference_log") or "")

    def _served(self, version: str, rec: Mapping[str, Any]) -> ServedVersion:
        return ServedVersion(version, rec["model_uri"], rec["url"], int(rec["weight"]))


def _capture(failures: list[BaseException], fn: Any, *args: Any) -> None:
    """Call ``fn(*args)`` in a thread, keeping what it raised for the caller to raise."""
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - re-raised by the thread that joins
        failures.append(exc)
