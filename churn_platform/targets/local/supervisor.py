"""``Supervisor``: starts one detached server process on a bound socket and waits for it.

The children's environment is ``base`` (None: the one this process's children inherit)
plus the per-start overrides (``process.child_env``); the supervisor itself reads no
environment.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from churn_platform.targets.local.process import child_env, spawn, wait_healthy
from churn_platform.targets.local.state import ProcessRecord


@dataclass(frozen=True)
class Supervisor:
    """Starts ``python -m churn_platform.serving ...`` processes on ``host``.

    base_env: the children's base environment (None: inherit this process's).
    health_timeout_seconds: how long a new process may take to answer its health check.
    """

    host: str = "127.0.0.1"
    health_timeout_seconds: float = 90.0
    base_env: Mapping[str, str] | None = field(default=None)

    def start(
        self,
        args: list[str],
        sock: socket.socket,
        log_path: Path,
        health_path: str,
        describe: Callable[[int], str],
        env: Mapping[str, str] | None = None,
    ) -> ProcessRecord:
        """Start a server listening on ``sock`` and return its record once ``health_path``
        answers 200 (``describe(pid)`` names it in errors; the process is stopped then)."""
        port = sock.getsockname()[1]
        pid = spawn(args, log_path, sock, child_env(env, self.base_env))
        url = f"http://{self.host}:{port}"
        wait_healthy(url + health_path, pid, log_path, self.health_timeout_seconds, describe(pid))
        return ProcessRecord(pid, port, url, str(log_path), time.time())
