"""``LocalProcessTarget``: model versions as detached processes on 127.0.0.1 behind a router.

Layout under ``state_dir`` (default ``$CHURN_HOME/deployments``)::

    <environment>/state.json        pid, port, url, model_uri, weight of every server + the router
    <environment>/router.json       the router's own backend table (it reloads it on restart)
    <environment>/logs/*.log        stdout/stderr of each process
    <environment>/.lock             serialises changes from concurrent runs
    prometheus/targets.json         file_sd targets of every running model server

Every process is started with ``start_new_session=True`` and its output in a log file,
so it outlives the Dagster run (or Python object) that started it; ``stop_all`` or
``python -m churn_platform.serving stop`` ends them. The parent binds each listening
socket itself and hands the file descriptor to the child, so a port is never picked
and then lost to a race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from churn_platform.core.rollout import EnvironmentState, ServedVersion

ENVIRONMENTS = ("staging", "production")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_TEMPLATE = PROJECT_ROOT / "deploy" / "local" / "prometheus.yml"
# The cluster's alert rules, loaded by the local Prometheus too (same metric names).
ALERT_RULES = PROJECT_ROOT / "deploy" / "k8s" / "prometheus" / "churn-alerts.rules.yml"


# ---------------------------------------------------------------- process helpers


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 = a free port), inheritable by a child."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"cannot listen on {host}:{port} ({exc}); choose another port or 0 for a free one"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server process: ours plus single-threaded BLAS/OpenMP."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # one predict of a few rows gains nothing from threads and loses a lot to contention
    env["OMP_NUM_THREADS"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def spawn(args: list[str], log_path: Path, sock: socket.socket, env: Mapping[str, str]) -> int:
    """Start ``python -m churn_platform.serving <args> --fd N`` detached; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = sock.fileno()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "churn_platform.serving", *args, "--fd", str(fd)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(PROJECT_ROOT),
            pass_fds=(fd,),
            start_new_session=True,
        )
    sock.close()  # the child holds its own copy
    return proc.pid


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _reap(pid: int) -> bool:
    """True if ``pid`` has exited (reaping it when it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_running(pid: int | None) -> bool:
    """True if ``pid`` is a live churn_platform server process (not a recycled pid)."""
    if not pid or _reap(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid
    if b"churn_platform.serving" not in cmdline:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_process(pid: int | None, timeout_seconds: float = 10.0) -> None:
    """SIGTERM the process group of ``pid`` (in-flight requests finish), SIGKILL after a timeout."""
    if not is_running(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if _reap(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for _ in range(100):
        if _reap(pid):
            return
        time.sleep(0.02)


def wait_healthy(url: str, pid: int, log_path: Path, timeout_seconds: float, what: str) -> None:
    """Poll ``url`` until it answers 200; raise with the log's tail if the process dies,
    reports a failed load, or the timeout passes (the process is stopped then)."""
    deadline = time.monotonic() + timeout_seconds
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if not is_running(pid):
                raise RuntimeError(
                    f"{what} exited during startup. Last log lines ({log_path}):\n"
                    f"{log_tail(log_path)}"
                )
            try:
                r = client.get(url)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:500]}"
                if r.status_code == 503 and '"failed"' in r.text:
                    stop_process(pid)
                    raise RuntimeError(
                        f"{what} failed to load its model: {last}\nLast log lines "
                        f"({log_path}):\n{log_tail(log_path)}"
                    )
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                stop_process(pid)
                raise RuntimeError(
                    f"{what} was not healthy at {url} after {timeout_seconds:g}s ({last}); "
                    f"raise health_timeout_seconds if the machine is slow. Last log lines "
                    f"({log_path}):\n{log_tail(log_path)}"
                )
            time.sleep(0.1)


# ---------------------------------------------------------------- state


@dataclass
class ProcessRecord:
    """One process the target started, as kept in ``state.json``."""

    pid: int
    port: int
    url: str
    log: str
    started_at: float
    model_uri: str = ""
    weight: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        """Parse one entry of ``state.json``."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    # owner-only: the state file holds the router's admin token
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def admin_token(state: dict[str, Any]) -> str:
    """The environment's router admin token, generated into its state on first use."""
    token = state.get("admin_token")
    if not token:
        token = state["admin_token"] = secrets.token_urlsafe(32)
    return str(token)


def router_targets_file(targets_file: Path) -> Path:
    """The file_sd JSON of the running routers, beside the model servers' ``targets_file``
    (the routers export the traffic split, the configured weights and the drift sensor's PSI)."""
    return targets_file.with_name("routers.json")


def render_prometheus_config(
    targets_file: Path,
    scrape_interval: str = "1s",
    template: Path = PROMETHEUS_TEMPLATE,
    rules_file: Path = ALERT_RULES,
) -> str:
    """``deploy/local/prometheus.yml`` with its placeholders filled in."""
    text = template.read_text()
    return (
        text.replace("__ROUTER_TARGETS_FILE__", str(router_targets_file(targets_file)))
        .replace("__TARGETS_FILE__", str(targets_file))
        .replace("__SCRAPE_INTERVAL__", scrape_interval)
        .replace("__RULES_FILE__", str(rules_file))
    )


class LocalProcessTarget:
    """``DeploymentTarget`` running each model version as a uvicorn process on this machine.

    ``router_ports`` maps environment to the router's port (0 or absent: a free port,
    kept across restarts once chosen). ``server_env`` is added to every model server's
    environment; ``deploy(..., extra_env=...)`` to one server's (e.g. ``CHURN_FAULT_RATE``).
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        tracking_uri: str | None = None,
        router_ports: Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        *,
        inference_log_dir: str | Path | None = None,
        server_env: Mapping[str, str] | None = None,
        health_timeout_seconds: float = 90.0,
    ) -> None:
        if state_dir is None or str(state_dir) == "":
            from churn_platform.settings import churn_home

            state_dir = churn_home() / "deployments"
        self.state_dir = Path(state_dir).resolve()
        self.tracking_uri = tracking_uri
        self.router_ports = dict(router_ports or {})
        self.host = host
        self.inference_log_dir = Path(inference_log_dir) if inference_log_dir else None
        self.server_env = dict(server_env or {})
        self.health_timeout_seconds = health_timeout_seconds
        for env, port in self.router_ports.items():
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"router_ports[{env!r}] must be a port in 0..65535, got {port!r}")

    # -------- files

    def _env_dir(self, environment: str) -> Path:
        if not environment or "/" in environment or environment.startswith("."):
            raise ValueError(
                f"environment must be a plain name such as 'staging', got {environment!r}"
            )
        return self.state_dir / environment

    def state_file(self, environment: str) -> Path:
        """Where ``environment``'s processes are recorded."""
        return self._env_dir(environment) / "state.json"

    @property
    def targets_file(self) -> Path:
        """The Prometheus file_sd JSON listing every running model server."""
        return self.state_dir / "prometheus" / "targets.json"

    @contextlib.contextmanager
    def _locked(self, environment: str) -> Iterator[dict[str, Any]]:
        """Hold the environment's lock; yield its state dict and save it on exit."""
        folder = self._env_dir(environment)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read(environment)
            try:
                yield state
            finally:
                _write_json(self.state_file(environment), state)
                self._write_targets()

    def _read(self, environment: str) -> dict[str, Any]:
        path = self.state_file(environment)
        if not path.exists():
            return {"environment": environment, "router": None, "versions": {}}
        return json.loads(path.read_text())

    def environments(self) -> list[str]:
        """Environments that have a state file."""
        if not self.state_dir.exists():
            return []
        return sorted(p.parent.name for p in self.state_dir.glob("*/state.json"))

    def _write_targets(self) -> None:
        groups: list[dict[str, Any]] = []
        routers: list[dict[str, Any]] = []
        for env in self.environments():
            state = self._read(env)
            targets = [
                f"{self.host}:{rec['port']}"
                for rec in state["versions"].values()
                if is_running(rec.get("pid"))
            ]
            if targets:
                groups.append({"targets": sorted(targets), "labels": {"environment": env}})
            router = state.get("router")
            if router and is_running(router.get("pid")):
                routers.append(
                    {"targets": [f"{self.host}:{router['port']}"], "labels": {"environment": env}}
                )
        _write_json(self.targets_file, groups)
        _write_json(router_targets_file(self.targets_file), routers)

    def write_prometheus_config(self, path: str | Path, scrape_interval: str = "1s") -> Path:
        """Write a Prometheus config (from ``deploy/local/prometheus.yml``) that discovers
        this target's servers through ``targets_file``."""
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        for listing in (self.targets_file, router_targets_file(self.targets_file)):
            if not listing.exists():
                _write_json(listing, [])
        out = Path(path)
        out.write_text(render_prometheus_config(self.targets_file, scrape_interval))
        return out

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
            router = self._ensure_router(environment, state)
            existing = state["versions"].get(version)
            if existing and is_running(existing["pid"]):
                if existing["model_uri"] != model_uri:
                    raise ValueError(
                        f"version {version} already runs in {environment} from "
                        f"{existing['model_uri']}, not {model_uri}; retire it first"
                    )
                return self._served(version, existing)
            log_path = self._env_dir(environment) / "logs" / f"model-{version}.log"
            args = ["model-server", "--model-uri", model_uri, "--version", version]
            env: dict[str, str] = {**self.server_env, **(extra_env or {})}
            # the store its model URI resolves in, kept so `restore` (another process, maybe
            # with other settings) restarts the version from the same store
            tracking_uri = self.tracking_uri or (existing or {}).get("tracking_uri")
            if tracking_uri:
                env["MLFLOW_TRACKING_URI"] = tracking_uri
            if self.inference_log_dir:
                args += ["--inference-log", str(self.inference_log_dir / f"{version}.jsonl")]
            sock = bind_socket(self.host, 0)
            port = sock.getsockname()[1]
            pid = spawn(args, log_path, sock, child_env(env))
            url = f"http://{self.host}:{port}"
            wait_healthy(
                url + "/health",
                pid,
                log_path,
                self.health_timeout_seconds,
                f"model server for {model_uri} (version {version}, pid {pid})",
            )
            record = ProcessRecord(pid, port, url, str(log_path), time.time(), model_uri, 0)
            previous_weight = existing["weight"] if existing else 0
            record.weight = previous_weight
            state["versions"][version] = {**record.__dict__, "tracking_uri": tracking_uri or ""}
            self._push_table(router["url"], state)
            return self._served(version, state["versions"][version])

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
            router = self._ensure_router(environment, state)
            for v, rec in running.items():
                rec["weight"] = int(weights.get(v, 0))
            self._push_table(router["url"], state)
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        """Running versions (dead processes are left out) and the router's URL."""
        state = self._read(environment)
        router = state.get("router")
        endpoint = router["url"] if router and is_running(router.get("pid")) else None
        versions = tuple(
            self._served(v, rec)
            for v, rec in sorted(state["versions"].items(), key=lambda kv: _version_key(kv[0]))
            if is_running(rec.get("pid"))
        )
        return EnvironmentState(environment, endpoint, versions)

    def retire(self, environment: str, version: str) -> None:
        """Stop ``version``'s server; it must carry 0% of the traffic."""
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
                self._push_table(router["url"], state)
            stop_process(rec["pid"])

    # -------- beyond the protocol

    def restore(self, environment: str) -> list[str]:
        """Bring ``environment`` back as its state file describes it: every recorded
        version that is not running is started again from its model URI at its recorded
        weight, and the router at its recorded port (so the endpoint URL stays the same).
        Returns what was repaired, one line each; a version that cannot start is reported
        and left out of the router's table."""
        state = self._read(environment)
        router = state.get("router")
        dead = {v: rec for v, rec in state["versions"].items() if not is_running(rec.get("pid"))}
        router_dead = router is not None and not is_running(router.get("pid"))
        if not dead and not router_dead:
            return []
        repairs = []
        with self._locked(environment) as locked:
            if router_dead:
                self._ensure_router(environment, locked)
                repairs.append(
                    f"router of {environment} was down; restarted at {locked['router']['url']}"
                )
        for version, rec in sorted(dead.items(), key=lambda kv: _version_key(kv[0])):
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
                self._push_table(locked["router"]["url"], locked)
        return repairs

    def live_weights(self, environment: str) -> dict[str, int] | None:
        """The weights the running router applies now (GET /-/weights), None when it is down."""
        endpoint = self.state(environment).endpoint
        if endpoint is None:
            return None
        try:
            answer = httpx.get(endpoint + "/-/weights", timeout=5.0)
            answer.raise_for_status()
            backends = answer.json()["backends"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return {str(v): int(b["weight"]) for v, b in backends.items()}

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
        rec = self._read(environment)["versions"].get(str(version))
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
                    (self._env_dir(env) / "router.json").unlink()
        return stopped

    def status(self) -> dict[str, Any]:
        """Every environment's recorded processes with a ``running`` flag (for the CLI)."""
        out: dict[str, Any] = {}
        for env in self.environments():
            state = self._read(env)
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

    def _served(self, version: str, rec: Mapping[str, Any]) -> ServedVersion:
        return ServedVersion(version, rec["model_uri"], rec["url"], int(rec["weight"]))

    def _ensure_router(self, environment: str, state: dict[str, Any]) -> dict[str, Any]:
        """The environment's router record, (re)starting the router if it is not running."""
        router = state.get("router")
        if router and is_running(router.get("pid")):
            return router
        port = self.router_ports.get(environment, 0) or (router or {}).get("port", 0)
        try:
            sock = self._bind_remembered(port, (router or {}).get("pid"))
        except RuntimeError:
            if self.router_ports.get(environment):
                raise
            sock = bind_socket(self.host, 0)  # the remembered port was taken meanwhile
        port = sock.getsockname()[1]
        env_dir = self._env_dir(environment)
        table_file = env_dir / "router.json"
        # the router resumes from its own file; make it match what we know is running
        table = {
            v: {"url": rec["url"], "weight": rec["weight"]}
            for v, rec in state["versions"].items()
            if is_running(rec.get("pid"))
        }
        if sum(t["weight"] for t in table.values()) not in (0, 100):
            table = {v: {**t, "weight": 0} for v, t in table.items()}
        _write_json(table_file, {"backends": table})
        log_path = env_dir / "logs" / "router.log"
        # the token goes through the environment (readable by this user only), not argv
        env = child_env({"CHURN_ROUTER_ADMIN_TOKEN": admin_token(state)})
        pid = spawn(["router", "--state-file", str(table_file)], log_path, sock, env)
        url = f"http://{self.host}:{port}"
        wait_healthy(
            url + "/-/health",
            pid,
            log_path,
            self.health_timeout_seconds,
            f"router of {environment}",
        )
        record = ProcessRecord(pid, port, url, str(log_path), time.time())
        state["router"] = {
            k: v for k, v in record.__dict__.items() if k not in ("model_uri", "weight")
        }
        return state["router"]

    def _bind_remembered(self, port: int, old_pid: int | None) -> socket.socket:
        """A socket on the router's remembered ``port``, so a restarted router keeps its URL.

        The port can be held for a moment after a kill: by a child of the old router that
        outlived its leader (killed here), or by a client connection that happens to use it
        as its local port. It is tried again for up to ``PORT_RETRIES`` x 0.1 s before the
        caller falls back to a new port."""
        if port and old_pid and _group_alive(old_pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(old_pid, signal.SIGKILL)
        for attempt in range(PORT_RETRIES if port else 1):
            try:
                return bind_socket(self.host, port)
            except RuntimeError:
                if attempt == (PORT_RETRIES if port else 1) - 1:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _push_table(self, router_url: str, state: dict[str, Any]) -> None:
        backends = {
            v: {"url": rec["url"], "weight": rec["weight"]} for v, rec in state["versions"].items()
        }
        r = httpx.put(
            router_url + "/-/weights",
            json={"backends": backends},
            headers={"authorization": f"Bearer {admin_token(state)}"},
            timeout=10.0,
        )
        if r.status_code != 200:
            raise RuntimeError(f"router at {router_url} refused the table {backends}: {r.text}")


PORT_RETRIES = 100  # x 0.1 s: how long a restarted router waits for its old port


def _group_alive(pgid: int) -> bool:
    """True while any process of process group ``pgid`` exists (zombies excluded)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():  # no process table to tell zombies apart: assume alive
        return True
    members = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    for proc in members:
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (sys.maxsize, version)
