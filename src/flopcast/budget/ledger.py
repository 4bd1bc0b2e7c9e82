"""Persistent FLOP budget ledger: one SQLite file per study. No torch.

Every experiment reserves its planned FLOPs before work and settles what it used after.
Reservations happen inside ``BEGIN IMMEDIATE`` transactions, so concurrent processes cannot
oversubscribe the budget. While an experiment runs it reports progress (``progress``), so FLOPs
spent by a process that is killed stay counted.

A reservation is a lease: it records its owner (pid, host, start time). Whenever the ledger is
opened, a lease on this host whose owner process is gone (``kill -9``, a crash) is settled as
``abandoned`` with the FLOPs it last reported; ``release`` settles one by hand (another host's, say).
A training run that resumes from a checkpoint adopts its own row again (``adopt``), so a run is
one row however often it was stopped. A ``hold`` keeps FLOPs aside (a stage's evaluation while it
trains) and disappears when dropped or when its owner dies.

Committed FLOPs of a row: ``used`` when it is finished, otherwise ``max(planned, used)``.
Left = budget - sum(committed).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..checks import check_budget
from ..errors import BudgetExceeded, FlopcastError
from .lock import HOST, owner_alive
from .records import Record, write_record
from .rows import ACTIVE, COLUMNS, COMMITTED, FINISHED, HOLD, LEASE_COLUMNS, RESUMABLE, SCHEMA, Charge, Entry


class RunLedger(Protocol):
    """What a training run or an evaluation asks of its ledger: a :class:`Ledger`, or a stand-in that forwards
    these calls to the process that owns it (:class:`flopcast.study.scale_out.RemoteLedger`)."""

    def reserve(self, name: str, kind: str, flops_planned: float, *, model: str | None = None,
                seq: int | None = None, batch: int | None = None, rank: int | None = None,
                steps: int | None = None, info: dict | None = None) -> int: ...
    def resume(self, name: str) -> Entry | None: ...
    def adopt(self, id: int) -> Entry | None: ...
    def progress(self, id: int, flops_used: float, wall_s: float | None = None, steps: int | None = None) -> None: ...
    def settle(self, id: int, flops_used: float, status: str = "done", wall_s: float | None = None,
               steps: int | None = None, info: dict | None = None) -> Entry: ...
    def reserved(self, name: str, kind: str, flops_planned: float, record: Path | None = None,
                 **fields: Any) -> AbstractContextManager[Charge]: ...


class Ledger:
    """A FLOP budget and the experiments charged to it."""

    def __init__(self, path: str | Path, budget: float | None = None):
        self.path = Path(path)
        if budget is not None:
            check_budget(budget)
        if self.path.is_dir():
            raise FlopcastError(f"{self.path}: is a directory; a ledger is a file (e.g. {self.path / 'ledger.db'})")
        if self.path.is_file() and self.path.stat().st_size == 0:  # never made into a ledger behind one's back
            raise FlopcastError(f"{self.path}: an empty file, not a flopcast ledger")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init(budget)
        self.reap()

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.OperationalError as e:
            raise self._unwritable(e) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process without an fsync per step
        except sqlite3.DatabaseError as e:
            db.close()
            raise FlopcastError(f"{self.path}: not a flopcast ledger ({e})") from None
        return db

    @contextmanager
    def _tx(self):
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and "locked" not in str(e):
                raise self._unwritable(e) from None
            raise
        finally:
            db.close()

    def _unwritable(self, e: sqlite3.Error) -> FlopcastError:
        """A ledger that cannot be written (read-only, a full disk): one line; the work stops before it spends
        FLOPs the ledger could not hear of."""
        return FlopcastError(f"{self.path}: cannot write the ledger ({e}); make it writable or free disk space, "
                             "then run the same command again")

    def _init(self, budget: float | None) -> None:
        db = self._connect()
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"meta", "experiments"} <= tables:  # another program's database: never touched
                raise FlopcastError(f"{self.path}: not a flopcast ledger (an SQLite database with tables "
                                    f"{', '.join(sorted(tables))})")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {r["name"] for r in db.execute("PRAGMA table_info(experiments)")}
            for col, typ in LEASE_COLUMNS.items():  # ledgers of an older flopcast get the lease columns
                if col not in have:
                    db.execute(f"ALTER TABLE experiments ADD COLUMN {col} {typ}")
        except sqlite3.OperationalError as e:
            raise self._unwritable(e) from None
        except sqlite3.DatabaseError as e:
            raise FlopcastError(f"{self.path}: not a flopcast ledger ({e})") from None
        finally:
            db.close()
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='budget'").fetchone()
            if row is None:
                if budget is None:
                    raise FlopcastError(f"{self.path}: new ledger needs a budget (e.g. --budget 1e17)")
                db.execute("INSERT INTO meta VALUES ('budget', ?)", (str(int(budget)),))
            elif budget is not None and int(row["value"]) != int(budget):
                raise FlopcastError(f"{self.path}: ledger budget is {int(row['value']):.3e}, not {budget:.3e}; "
                                    f"change it with `flopcast budget set {self.path} --budget {budget:g}`")

    def reap(self) -> list[int]:
        """Settle the leases of dead owners on this host as ``abandoned`` (holds are dropped); returns their ids."""
        with self._tx() as db:
            rows = db.execute(f"SELECT id, kind, owner_pid, owner_host, lease_start FROM experiments "
                              f"WHERE status IN {ACTIVE} AND owner_host=?", (HOST,)).fetchall()
            dead = [r for r in rows if not owner_alive(r["owner_pid"], r["owner_host"], r["lease_start"])]
            for r in dead:
                if r["kind"] == HOLD:
                    db.execute("DELETE FROM experiments WHERE id=?", (r["id"],))
                else:
                    db.execute("UPDATE experiments SET status='abandoned', updated=? WHERE id=?",
                               (time.time(), r["id"]))
        return [r["id"] for r in dead]

    # ------------------------------------------------------------------ queries
    def _one(self, sql: str, params: tuple = ()) -> Any:
        """The first row of a read-only query."""
        db = self._connect()
        try:
            return db.execute(sql, params).fetchone()
        finally:
            db.close()

    @property
    def budget(self) -> int:
        return int(self._one("SELECT value FROM meta WHERE key='budget'")["value"])

    def _refuse_below_committed(self, db: sqlite3.Connection, budget: float) -> None:
        committed = self._committed(db)
        if int(budget) < committed:
            raise BudgetExceeded(f"{self.path}: cannot lower the budget to {budget:.3e}: {committed:.3e} FLOPs "
                                 f"are already used or reserved")

    def check_budget_change(self, budget: float) -> None:
        """Raise unless ``set_budget(budget)`` would be accepted (a finite budget, not below what is committed)."""
        check_budget(budget)
        db = self._connect()
        try:
            self._refuse_below_committed(db, budget)
        finally:
            db.close()

    def set_budget(self, budget: float) -> int:
        """Change the budget: raising is always allowed, lowering below what is used or reserved is refused.
        Returns the old budget."""
        check_budget(budget)
        with self._tx() as db:
            old = int(db.execute("SELECT value FROM meta WHERE key='budget'").fetchone()["value"])
            self._refuse_below_committed(db, budget)
            db.execute("UPDATE meta SET value=? WHERE key='budget'", (str(int(budget)),))
        return old

    def entries(self) -> list[Entry]:
        db = self._connect()
        try:
            return [Entry(**dict(r)) for r in db.execute("SELECT * FROM experiments ORDER BY id")]
        finally:
            db.close()

    def get(self, id: int) -> Entry:
        r = self._one("SELECT * FROM experiments WHERE id=?", (id,))
        if r is None:
            raise FlopcastError(f"{self.path}: no experiment with id {id}")
        return Entry(**dict(r))

    def find(self, name: str) -> Entry | None:
        """Latest experiment with this name."""
        r = self._one("SELECT * FROM experiments WHERE name=? ORDER BY id DESC LIMIT 1", (name,))
        return Entry(**dict(r)) if r else None

    @staticmethod
    def _committed(db: sqlite3.Connection) -> int:
        return int(db.execute(COMMITTED).fetchone()[0])

    def committed_under(self, prefix: str) -> int:
        """FLOPs used or reserved by experiments whose name starts with ``prefix`` (a stage's ``name/``)."""
        return int(self._one(COMMITTED + " WHERE substr(name, 1, ?) = ? AND kind != ?", (len(prefix), prefix, HOLD))[0])

    def used(self) -> int:
        return int(self._one("SELECT COALESCE(SUM(flops_used), 0) FROM experiments")[0])

    def left(self) -> int:
        """Budget minus everything used or still reserved."""
        return self.budget - int(self._one(COMMITTED)[0])

    # ------------------------------------------------------------------ updates
    def reserve(self, name: str, kind: str, flops_planned: float, *, model: str | None = None,
                seq: int | None = None, batch: int | None = None, rank: int | None = None,
                steps: int | None = None, info: dict | None = None, owner: tuple[int, str] | None = None) -> int:
        """Reserve FLOPs for an experiment; refuses (BudgetExceeded) if they are not left. The lease is this
        process's, or ``owner``'s (pid, host): a worker whose ledger is served by another process."""
        planned = int(flops_planned)
        if planned < 0:
            raise FlopcastError(f"planned FLOPs must be >= 0, got {planned}")
        now = time.time()
        with self._tx() as db:
            budget = int(db.execute("SELECT value FROM meta WHERE key='budget'").fetchone()[0])
            left = budget - self._committed(db)
            if planned > left:
                raise BudgetExceeded(
                    f"{kind} '{name}' needs {planned:.3e} FLOPs but only {left:.3e} of the {budget:.3e} budget "
                    f"are left ({budget - left:.3e} used or reserved, {100 * (budget - left) / budget:.1f}%)")
            cur = db.execute(
                "INSERT INTO experiments (name, kind, model, seq, batch, rank, steps, flops_planned, status, created,"
                " updated, info, owner_pid, owner_host, lease_start) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, kind, model, seq, batch, rank, steps, planned, "reserved", now, now, json.dumps(info or {}),
                 *(owner or (os.getpid(), HOST)), now))
            return int(cur.lastrowid)

    def resume(self, name: str) -> Entry | None:
        """The latest experiment of this name that a resumed run may adopt, or None."""
        e = self.find(name)
        return e if e is not None and e.status in RESUMABLE else None

    def adopt(self, id: int, owner: tuple[int, str] | None = None) -> Entry | None:
        """Take over an unfinished row (a training run resuming from its checkpoint): it becomes this
        process's lease again (or ``owner``'s, as for :meth:`reserve`). None if the row is gone or finished for
        good."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(f"UPDATE experiments SET status='running', owner_pid=?, owner_host=?, lease_start=?,"
                             f" updated=? WHERE id=? AND status IN {RESUMABLE}", (*(owner or (os.getpid(), HOST)),
                                                                              now, now, id))
        return self.get(id) if cur.rowcount else None

    def release(self, id: int) -> Entry:
        """Settle an open reservation by hand with the FLOPs it reported (``flopcast budget release ID``)."""
        e = self.get(id)
        if e.status not in ACTIVE:
            raise FlopcastError(f"{self.path}: experiment {id} ({e.name}) is {e.status}, not an open reservation")
        held_here = e.owner_host == HOST and e.owner_pid != os.getpid()
        if held_here and owner_alive(e.owner_pid, e.owner_host, e.lease_start):
            raise FlopcastError(f"{self.path}: experiment {id} ({e.name}) is held by running process {e.owner_pid}; "
                                "stop it first")
        return self.settle(id, e.flops_used, status="released", info={"released_at": time.time()})

    def hold(self, name: str, flops: float) -> int:
        """Keep ``flops`` aside for later work of this process (e.g. a stage's test evaluation)."""
        return self.reserve(name, HOLD, flops)

    def drop_hold(self, id: int | None) -> None:
        if id is not None:
            with self._tx() as db:
                db.execute("DELETE FROM experiments WHERE id=? AND kind=?", (id, HOLD))

    def progress(self, id: int, flops_used: float, wall_s: float | None = None, steps: int | None = None) -> None:
        """Record cumulative FLOPs used so far (the row stays reserved/running)."""
        with self._tx() as db:
            db.execute("UPDATE experiments SET flops_used=?, wall_s=COALESCE(?, wall_s), steps=COALESCE(?, steps),"
                       " status='running', updated=? WHERE id=? AND status IN ('reserved','running')",
                       (int(flops_used), wall_s, steps, time.time(), id))

    def settle(self, id: int, flops_used: float, status: str = "done", wall_s: float | None = None,
               steps: int | None = None, info: dict | None = None) -> Entry:
        """Finish an experiment with the FLOPs it actually used; its unused reservation is released."""
        if status not in FINISHED:
            raise FlopcastError(f"settle status must be one of {FINISHED}, got {status!r}")
        with self._tx() as db:
            row = db.execute("SELECT info FROM experiments WHERE id=?", (id,)).fetchone()
            if row is None:
                raise FlopcastError(f"{self.path}: no experiment with id {id}")
            merged = {**json.loads(row["info"] or "{}"), **(info or {})}
            db.execute("UPDATE experiments SET flops_used=?, status=?, wall_s=COALESCE(?, wall_s),"
                       " steps=COALESCE(?, steps), info=?, updated=? WHERE id=?",
                       (int(flops_used), status, wall_s, steps, json.dumps(merged), time.time(), id))
        return self.get(id)

    def reserved(self, name: str, kind: str, flops_planned: float, record: Path | None = None,
                 **fields: Any) -> AbstractContextManager[Charge]:
        """:func:`reserved_on` this ledger."""
        return reserved_on(self, name, kind, flops_planned, record, **fields)

    def restore(self, records: list[Record]) -> int:
        """Add a settled row per record (``flopcast budget rebuild``): a record still ``running``
        was left by a killed process and becomes ``abandoned``; a row keeps its old id when it is free (a
        checkpoint remembers it). Returns the FLOPs restored."""
        with self._tx() as db:
            taken = {r[0] for r in db.execute("SELECT id FROM experiments")}
            for r in records:
                status = "abandoned" if r.status in ACTIVE else r.status
                rid = r.ledger_id if r.ledger_id is not None and r.ledger_id not in taken else None
                cur = db.execute("INSERT INTO experiments (id, name, kind, model, seq, batch, rank, steps,"
                                 " flops_planned, flops_used, status, created, updated, info)"
                                 " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                 (rid, r.name, r.kind, r.model, r.seq, r.batch, r.rank, r.steps, r.flops, r.flops,
                                  status, r.updated, r.updated, json.dumps({"rebuilt_from": "records"})))
                taken.add(int(cur.lastrowid))
        return sum(r.flops for r in records)

    # ------------------------------------------------------------------ export
    def rows(self) -> list[dict]:
        b = self.budget
        return [{**{c: getattr(e, c) for c in COLUMNS}, "share": e.flops_used / max(b, 1)} for e in self.entries()]

    def summary(self) -> dict:
        b, used, left = self.budget, self.used(), self.left()
        return {"budget": b, "used": used, "reserved": b - left - used, "left": left, "used_share": used / max(b, 1)}


@contextmanager
def reserved_on(ledger: RunLedger, name: str, kind: str, flops_planned: float, record: Path | None = None,
                **fields: Any) -> Iterator[Charge]:
    """Reserve on ``ledger`` (a :class:`Ledger` or a stand-in for it), run the block, settle: the block counts its
    work with ``add`` on the yielded :class:`Charge`, each addition reported to the ledger at once (and to
    ``record/charges.json``, see :mod:`flopcast.budget.records`).

    If the block raises (Ctrl-C included), the experiment is settled as failed with the FLOPs the
    block had counted so far (work done before the error stays counted), and the error propagates.
    """
    row = ledger.reserve(name, kind, flops_planned, **fields)
    keep = {k: v for k, v in fields.items() if k in ("model", "seq", "batch", "rank", "steps")}

    def note(used: int, status: str) -> None:
        if record is not None:
            write_record(record, Record(name, kind, used, status, row, **keep))

    def report(used: int) -> None:
        ledger.progress(row, used)
        note(used, "running")
    charge = Charge(row, report=report)
    note(0, "running")
    t0 = time.time()
    try:
        yield charge
    except BaseException:
        ledger.settle(row, charge.used, status="failed", wall_s=time.time() - t0)
        note(charge.used, "failed")
        raise
    ledger.settle(row, charge.used, wall_s=time.time() - t0)
    note(charge.used, "done")
