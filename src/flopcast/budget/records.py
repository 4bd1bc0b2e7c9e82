"""FLOPs recorded beside the work that spent them, so a lost ledger is noticed and can be rebuilt. No torch.

A training run keeps ``charges.json`` in its run directory, an evaluation in its output directory: one entry
per ledger row the work charged (its name, kind, FLOPs so far, status and ledger id), written after each report
to the ledger (a step, a batch of forecasts, a settlement). A killed process leaves its entries at what the
ledger last heard, so the records never hold more than the ledger did.

:func:`check_covered` compares a directory's records with its ledger before work starts: a ledger that is
missing, or holds fewer FLOPs than were recorded (deleted, or swapped for another), stops the work with the
numbers instead of starting the budget again from zero. ``flopcast budget rebuild DIR``
(:func:`flopcast.api.tools.rebuild_ledger`, :meth:`flopcast.budget.ledger.Ledger.restore`) makes the ledger again
from the records.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import FlopcastError
from ..results import read_json, write_atomic

RECORD_FILE = "charges.json"


@dataclass(frozen=True)
class Record:
    """What one ledger row charged, as the work that spent it remembers."""

    name: str
    kind: str
    flops: int
    status: str                  # the ledger row's status when this was written: running, done, failed, ...
    ledger_id: int | None = None
    model: str | None = None
    seq: int | None = None
    batch: int | None = None
    rank: int | None = None
    steps: int | None = None
    updated: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def write_record(directory: str | Path, rec: Record) -> None:
    """Keep ``rec`` in ``directory/charges.json`` (replacing the entry of the same name), through a temporary
    file and a rename: a kill leaves the old file or the new one."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / RECORD_FILE
    entries = read_json(path) if path.is_file() else {}
    entries[rec.name] = {**asdict(rec), "updated": time.time()}
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(entries, indent=1)))


def read_records(root: str | Path) -> list[Record]:
    """Every record under ``root`` (archived stages included: their FLOPs were spent too), oldest first."""
    found = []
    for path in sorted(Path(root).rglob(RECORD_FILE)):
        entries = read_json(path)
        if not isinstance(entries, dict):
            raise FlopcastError(f"{path}: damaged (not a record of charges); delete it and rebuild the ledger by hand")
        found += [Record.from_dict(e) for e in entries.values()]
    return sorted(found, key=lambda r: r.updated)


def recorded_flops(root: str | Path) -> int:
    return sum(r.flops for r in read_records(root))


def check_covered(ledger_path: Path, root: Path, used: int | None) -> None:
    """Refuse, with the numbers, to go on in ``root`` when its records hold more FLOPs than the ledger
    (``used``: the ledger's FLOPs used, None when there is no ledger file)."""
    recorded = recorded_flops(root) if root.is_dir() else 0
    if recorded == 0 or (used is not None and used >= recorded):
        return
    fix = f"`flopcast budget rebuild {root}` makes it again from them"
    if used is None:
        raise FlopcastError(f"{ledger_path}: missing, but the work in {root} recorded {recorded:.3e} FLOPs; {fix}")
    raise FlopcastError(f"{ledger_path}: holds {used:.3e} FLOPs used, but the work in {root} recorded "
                        f"{recorded:.3e}; it is not this work's ledger, or lost rows; {fix} (with --force)")
