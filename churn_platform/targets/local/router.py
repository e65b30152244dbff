"""``RouterManager``: one weighted router process per environment, and its backend table.

The router keeps its port across restarts (so the endpoint URL stays the same), resumes
from its own ``router.json`` and takes table changes on ``PUT /-/weights`` guarded by the
environment's admin token.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any

import httpx

from churn_platform.targets.local.process import bind_socket, group_alive, is_running
from churn_platform.targets.local.state import StateStore, admin_token, write_json
from churn_platform.targets.local.supervisor import Supervisor

PORT_RETRIES = 100  # x 0.1 s: how long a restarted router waits for its old port


def backend_table(state: Mapping[str, Any], running_only: bool = False) -> dict[str, Any]:
    """``{version: {url, weight}}`` of the recorded versions (only the live ones if asked)."""
    return {
        v: {"url": rec["url"], "weight": rec["weight"]}
        for v, rec in state["versions"].items()
        if not running_only or is_running(rec.get("pid"))
    }


class RouterManager:
    """Starts, restarts and re-tables the routers of the environments in ``store``.

    ``router_ports`` maps environment to the router's port (0 or absent: a free port, kept
    across restarts once chosen).
    """

    def __init__(
        self, store: StateStore, supervisor: Supervisor, router_ports: Mapping[str, int]
    ) -> None:
        for env, port in router_ports.items():
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"router_ports[{env!r}] must be a port in 0..65535, got {port!r}")
        self.store = store
        self.supervisor = supervisor
        self.router_ports = dict(router_ports)

    def ensure(self, environment: str, state: dict[str, Any]) -> dict[str, Any]:
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
            sock = bind_socket(self.supervisor.host, 0)  # the remembered port was taken meanwhile
        env_dir = self.store.env_dir(environment)
        table_file = env_dir / "router.json"
        # the router resumes from its own file; make it match what we know is running
        table = backend_table(state, running_only=True)
        if sum(t["weight"] for t in table.values()) not in (0, 100):
            table = {v: {**t, "weight": 0} for v, t in table.items()}
        write_json(table_file, {"backends": table})
        record = self.supervisor.start(
            ["router", "--state-file", str(table_file)],
            sock,
            env_dir / "logs" / "router.log",
            "/-/health",
            lambda pid: f"router of {environment}",
            # the token goes through the environment (readable by this user only), not argv
            {"CHURN_ROUTER_ADMIN_TOKEN": admin_token(state)},
        )
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
        if port and old_pid and group_alive(old_pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(old_pid, signal.SIGKILL)
        for attempt in range(PORT_RETRIES if port else 1):
            try:
                return bind_socket(self.supervisor.host, port)
            except RuntimeError:
                if attempt == (PORT_RETRIES if port else 1) - 1:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def push_table(self, router_url: str, state: dict[str, Any]) -> None:
        """Send the recorded versions and weights to the running router."""
        backends = backend_table(state)
        r = httpx.put(
            router_url + "/-/weights",
            json={"backends": backends},
            headers={"authorization": f"Bearer {admin_token(state)}"},
            timeout=10.0,
        )
        if r.status_code != 200:
            raise RuntimeError(f"router at {router_url} refused the table {backends}: {r.text}")

    def put_mirror(
        self, router_url: str, state: dict[str, Any], version: str | None, percent: int
    ) -> None:
        """Start a fresh mirror session to ``version`` (None: stop mirroring)."""
        mirror = None if version is None else {"version": version, "percent": percent}
        r = httpx.put(
            router_url + "/-/mirror",
            json={"mirror": mirror},
            headers={"authorization": f"Bearer {admin_token(state)}"},
            timeout=10.0,
        )
        if r.status_code != 200:
            raise RuntimeError(f"router at {router_url} refused the mirror {mirror}: {r.text}")

    def mirror_record(self, router_url: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """The current mirror session's record (GET /-/mirror), None when none runs."""
        r = httpx.get(
            router_url + "/-/mirror",
            headers={"authorization": f"Bearer {admin_token(state)}"},
            timeout=10.0,
        )
        r.raise_for_status()
        record = r.json().get("record")
        return record if isinstance(record, dict) else None

    @staticmethod
    def live_weights(endpoint: str) -> dict[str, int] | None:
        """The weights the router at ``endpoint`` applies now (GET /-/weights), None when it
        does not answer."""
        try:
            answer = httpx.get(endpoint + "/-/weights", timeout=5.0)
            answer.raise_for_status()
            backends = answer.json()["backends"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return {str(v): int(b["weight"]) for v, b in backends.items()}
