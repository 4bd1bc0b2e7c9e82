"""An exclusive lock per study or run directory: one process works in a directory at a time. No torch.

The lock is an OS file lock (``flock``) on ``DIR/.flopcast.lock``, so it dies with its process
(``kill -9`` included) and never needs cleaning up. The file holds the owner's pid for the message
a second process gets.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import FlopcastError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; directories are not locked there
    fcntl = None

LOCK_FILE = ".flopcast.lock"


class DirLock:
    """``with DirLock(d):`` holds ``d`` for this process; another process gets FlopcastError("d is in use by pid N")."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._fh = None

    def __enter__(self) -> "DirLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.dir / LOCK_FILE, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                pid = fh.read().strip() or "?"
                fh.close()
                raise FlopcastError(f"{self.dir} is in use by pid {pid}; wait for it to finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            if fcntl is not None:
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
