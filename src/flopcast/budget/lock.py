"""Which process owns what: an exclusive lock per study or run directory (one process works in a directory
at a time), and whether the owner of a ledger lease still runs. No torch.

The lock is an OS file lock (``flock``) on ``DIR/.flopcast.lock``, so it dies with its process
(``kill -9`` included) and never needs cleaning up. The file holds the owner's pid for the message
a second process gets.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import IO

from ..errors import FlopcastError

try:
    import fcntl

    HAVE_FLOCK = True
except ImportError:  # pragma: no cover - Windows: no flock; directories are not locked there
    HAVE_FLOCK = False

LOCK_FILE = ".flopcast.lock"
HOST = socket.gethostname()


class DirLock:
    """``with DirLock(d):`` holds ``d`` for this process; another process gets FlopcastError("d is in use by pid N")."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self._fh: IO[str] | None = None

    def __enter__(self) -> "DirLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.dir / LOCK_FILE, "a+")
        if HAVE_FLOCK:
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

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            if HAVE_FLOCK:
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished: not alive
        return float("inf")
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def owner_alive(pid: int | None, host: str | None, since: float | None) -> bool:
    """Whether the process that took a lease still runs (True where that cannot be told: another host)."""
    if pid is None or host != HOST:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(pid)
    # a process that started after the lease was taken reuses the pid: it is not the owner
    return started is None or since is None or started <= since + 1.0
