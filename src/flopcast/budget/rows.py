"""A ledger's rows as Python sees them: the statuses a row goes through, the table's schema, an
:class:`Entry` (one row) and a :class:`Charge` (an open reservation work adds its FLOPs to). No torch.

Committed FLOPs of a row: ``used`` when it is finished, otherwise ``max(planned, used)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ACTIVE = ("reserved", "running")
FINISHED = ("done", "failed", "cancelled", "interrupted", "abandoned", "released", "diverged")
RESUMABLE = ("reserved", "running", "interrupted", "abandoned")  # rows a resumed training run adopts
HOLD = "hold"
COLUMNS = ("id", "name", "kind", "model", "seq", "batch", "rank", "steps", "flops_planned", "flops_used",
           "wall_s", "status", "created", "updated", "info", "owner_pid", "owner_host", "lease_start")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    seq INTEGER,
    batch INTEGER,
    rank INTEGER,
    steps INTEGER,
    flops_planned INTEGER NOT NULL,
    flops_used INTEGER NOT NULL DEFAULT 0,
    wall_s REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    info TEXT
);
CREATE INDEX IF NOT EXISTS experiments_name ON experiments(name);
"""
# committed FLOPs of the rows: used when finished, else the larger of planned and used
COMMITTED = (f"SELECT COALESCE(SUM(CASE WHEN status IN {FINISHED} THEN flops_used "
             "ELSE MAX(flops_planned, flops_used) END), 0) FROM experiments")
LEASE_COLUMNS = {"owner_pid": "INTEGER", "owner_host": "TEXT", "lease_start": "REAL"}


@dataclass(frozen=True)
class Entry:
    id: int
    name: str
    kind: str
    model: str | None
    seq: int | None
    batch: int | None
    rank: int | None
    steps: int | None
    flops_planned: int
    flops_used: int
    wall_s: float
    status: str
    created: float
    updated: float
    info: str | None
    owner_pid: int | None = None
    owner_host: str | None = None
    lease_start: float | None = None

    @property
    def committed(self) -> int:
        return self.flops_used if self.status in FINISHED else max(self.flops_planned, self.flops_used)


@dataclass
class Charge:
    """An open reservation (``id`` None when no ledger is kept): :meth:`add` counts work as it is done."""

    id: int | None = None
    used: int = 0
    report: Callable[[int], None] | None = None   # tells the ledger (and the work's record) the new total

    def add(self, flops: int) -> None:
        """Count ``flops`` more and report the total at once, so a process killed now has charged its work."""
        self.used += int(flops)
        if self.report is not None:
            self.report(self.used)
