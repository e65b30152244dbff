"""Detached model-server and router processes: sockets, environment, start, health, stop.

Every process is started with ``start_new_session=True`` and its output in a log file,
so it outlives the Dagster run (or Python object) that started it. The parent binds each
listening socket itself and hands the file descriptor to the child, so a port is never
picked and then lost to a race.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[3]


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


def child_env(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a server process: ``base`` plus single-threaded BLAS/OpenMP,
    this interpreter's folder on ``PATH``, the project on ``PYTHONPATH``, then ``extra``.

    ``base`` None: the environment this process's children inherit, at this moment (a child
    gets the parent's environment plus overrides; ``subprocess`` needs the whole mapping).
    """
    env = dict(os.environ if base is None else base)
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
    """Start ``python -m churn_platform.serving <args> --fd N --log-file <log_path>``
    detached (its output appended to ``log_path``, which it rotates); return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = sock.fileno()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "churn_platform.serving", *args, "--fd", str(fd)),
                *("--log-file", str(log_path)),  # rotated by the process itself
            ],
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


def group_alive(pgid: int) -> bool:
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
