"""A throwaway PostgreSQL server on 127.0.0.1 for tests.

``running_postgres()`` runs ``initdb`` into a fresh temporary folder, starts
``postgres`` on a free port (TCP on 127.0.0.1 only, its Unix socket inside that
folder), yields a ``PostgresServer`` with a SQLAlchemy URL, and stops the server and
deletes the folder afterwards. PostgreSQL refuses to run as root, so under root the
binaries run as the ``postgres`` system user through ``runuser``.

Binaries are looked up in ``$PG_BIN``, then ``/usr/lib/postgresql/<version>/bin``,
then ``PATH``; ``postgres_bin_dir()`` returns None when there are none, so tests can
skip with that reason.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "churn"
DATABASE = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running test server: trust authentication, superuser ``churn``."""

    host: str
    port: int
    user: str
    database: str
    data_dir: Path

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg2 driver)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.database}"


def postgres_bin_dir() -> Path | None:
    """Folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when not installed."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runner() -> tuple[list[str], str | None]:
    """Command prefix to run as a non-root user, and that user (None: as ourselves)."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError(
            "running as root and there is no 'postgres' user to run PostgreSQL as; "
            "create one (useradd postgres) or run the tests as a normal user"
        ) from exc
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], "postgres"
    return ["su", "postgres", "-s", "/bin/sh", "-c"], "postgres"


def _command(prefix: list[str], args: list[str]) -> list[str]:
    """``args`` run through ``prefix`` (``su -c`` wants one shell string)."""
    if prefix and prefix[0] == "su":
        return [*prefix, shlex.join(args)]
    return [*prefix, *args]


@contextmanager
def running_postgres(startup_timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """Start a fresh server, yield it, always stop it and remove its data."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl, postgres) are not installed")
    prefix, user = _runner()
    # short path under /tmp: the Unix socket path must stay under ~100 characters
    root = Path(tempfile.mkdtemp(prefix="churn-pg-", dir="/tmp"))
    data_dir = root / "data"
    log = root / "server.log"
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    started = False
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER]
        initdb += ["--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
        result = subprocess.run(
            _command(prefix, initdb), capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")
        for attempt in range(3):
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
                f"-c max_connections=20"
            )
            start = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", options]
            start += ["-w", "-t", str(int(startup_timeout_s)), "start"]
            result = subprocess.run(
                _command(prefix, start),
                capture_output=True,
                text=True,
                timeout=startup_timeout_s + 30,
            )
            if result.returncode == 0:
                started = True
                break
            if attempt == 2:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"postgres did not start: {result.stderr}\n{tail}")
            time.sleep(0.5)  # most likely the port was taken in between: try another
        yield PostgresServer("127.0.0.1", port, SUPERUSER, DATABASE, data_dir)
    finally:
        if started:
            stop = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
            subprocess.run(_command(prefix, stop), capture_output=True, text=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
