"""The local target's state files: one ``state.json`` per environment, changed under a lock.

Layout under ``state_dir``::

    <environment>/state.json        pid, port, url, model_uri, weight of every server + the router
    <environment>/router.json       the router's own backend table (it reloads it on restart)
    <environment>/logs/*.log        stdout/stderr of each process
    <environment>/.lock             serialises changes from concurrent runs
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically, readable by this user only."""
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


def version_key(version: str) -> tuple[int, str]:
    """Sort key: registry versions numerically, other names after them."""
    return (int(version), "") if version.isdigit() else (sys.maxsize, version)


class StateStore:
    """The state files of every environment under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def env_dir(self, environment: str) -> Path:
        """``environment``'s folder; the name must be a plain one."""
        if not environment or "/" in environment or environment.startswith("."):
            raise ValueError(
                f"environment must be a plain name such as 'staging', got {environment!r}"
            )
        return self.state_dir / environment

    def state_file(self, environment: str) -> Path:
        """Where ``environment``'s processes are recorded."""
        return self.env_dir(environment) / "state.json"

    @contextlib.contextmanager
    def locked(self, environment: str) -> Iterator[dict[str, Any]]:
        """Hold the environment's lock and yield its state dict (the caller saves it)."""
        folder = self.env_dir(environment)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.read(environment)

    def save(self, environment: str, state: dict[str, Any]) -> None:
        """Write ``state`` as ``environment``'s state file."""
        write_json(self.state_file(environment), state)

    def read(self, environment: str) -> dict[str, Any]:
        """``environment``'s state (an empty one when it has no file yet)."""
        path = self.state_file(environment)
        if not path.exists():
            return {"environment": environment, "router": None, "versions": {}}
        return json.loads(path.read_text())

    def environments(self) -> list[str]:
        """Environments that have a state file."""
        if not self.state_dir.exists():
            return []
        return sorted(p.parent.name for p in self.state_dir.glob("*/state.json"))
