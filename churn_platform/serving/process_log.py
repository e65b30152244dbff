"""A model server's or router's own log: one file, rotated by size, a bounded number kept.

A local process is started with its stdout and stderr appended to its log file
(``targets/local/process.spawn``) and ``--log-file`` naming that same file. Log records go
through a ``RotatingFileHandler``; on each rotation the process's file descriptors 1 and 2
are pointed at the new file, so whatever still writes there directly (a crash, a warning)
lands in the current file too and no rotated-away file stays open and growing.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ProcessLogHandler(RotatingFileHandler):
    """``RotatingFileHandler`` that also moves stdout and stderr to the new file."""

    def doRollover(self) -> None:  # noqa: N802 - logging's name
        """Rotate, then point file descriptors 1 and 2 at the fresh file."""
        super().doRollover()
        if self.stream is not None:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


def log_to_file(path: str | Path, max_bytes: int, backups: int, level: str) -> None:
    """Send every log record of this process (uvicorn's included) to ``path``, rotated at
    ``max_bytes`` with ``backups`` older files kept."""
    handler = ProcessLogHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
