"""Where a command may write, checked before it does any work, and how it writes: whole files or nothing.

Every command that writes a file names it with :class:`Output` and calls :func:`check_outputs` with its inputs
before it reads data, loads a model or spends a FLOP. An output is refused (one line) when it cannot be written,
when its extension is not one of its formats, when it is one of the command's inputs, when it is a ledger or a
file a study or run keeps, and when it already exists, unless the command was asked to replace it (``--force``).
:func:`flopcast.results.write_atomic` then writes through a temporary file beside the target and renames it into
place, so an interrupted write never leaves half a file, nor destroys the one that was there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlopcastError

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
# files a study or run directory keeps: an output named like one of them, beside the others, would replace it
KEPT_FILES = ("ledger.db", "plan.toml", "summary.json", "fingerprint.json", "status.json", "metrics.json",
              "metrics.jsonl", "split.json", "flops.json", "report.md", "data.h5", "windows.csv")
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Output:
    """A file a command writes: its path, the extensions of its formats (the first is the usual one), and what it
    is, for messages."""

    path: Path
    suffixes: tuple[str, ...]
    what: str


def ensure_writable(path: str | Path | None, directory: bool = False) -> None:
    """Fail now (one line) if ``path`` (a file, or a directory to create) cannot be written."""
    if path is None:
        return
    p = Path(path)
    if directory and p.exists() and not p.is_dir():
        raise FlopcastError(f"{p}: is a file; a directory is expected here")
    target = p if directory else p.parent
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    can_create = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    if not can_create or (p.exists() and not os.access(p, os.W_OK)):
        raise FlopcastError(f"{p}: cannot write here (no permission, or {existing} is not a directory)")
    if not directory and p.is_dir():
        raise FlopcastError(f"{p}: is a directory, expected a file name")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links and relative parts), existing or not."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return os.path.realpath(pa) == os.path.realpath(pb)


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is an SQLite database (a ledger, or another program's)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def kept_by_a_study(path: Path) -> bool:
    """Whether ``path`` is one of the files a study, run or evaluation directory keeps (named so, beside a ledger,
    plan, fingerprint, status, metrics or summary file)."""
    parent = path.parent
    markers = ("ledger.db", "plan.toml", "fingerprint.json", "status.json", "metrics.json", "summary.json")
    return path.name in KEPT_FILES and any((parent / m).exists() for m in markers)


def check_outputs(outputs: Sequence[Output | None], inputs: Sequence[str | Path | None] = (),
                  force: bool = False) -> None:
    """Refuse, in one line, any output that must not be written (see the module's docstring); ``inputs`` are the
    files and directories the command reads, ledgers included."""
    wanted = [o for o in outputs if o is not None]
    for i, o in enumerate(wanted):
        for other in wanted[:i]:
            if same_file(o.path, other.path):
                raise FlopcastError(f"{o.path}: named as both the {other.what} and the {o.what}")
    sources = [Path(p) for p in inputs if p is not None]
    for o in wanted:
        _check_one(o, sources, force)


def _check_one(o: Output, inputs: list[Path], force: bool) -> None:
    p = o.path
    ensure_writable(p)
    for src in inputs:
        if same_file(p, src) or (src.is_dir() and Path(os.path.realpath(p)).is_relative_to(os.path.realpath(src))):
            raise FlopcastError(f"{p}: is an input of this command; write the {o.what} to another file")
    if p.exists() and is_sqlite(p):
        raise FlopcastError(f"{p}: is a database (a flopcast ledger or another program's); it is never written over")
    if p.suffix.lower() not in o.suffixes:
        raise FlopcastError(f"{p}: a {o.what} is written as {' or '.join(o.suffixes)}; give the file that extension")
    if not p.exists():
        return
    if kept_by_a_study(p):
        raise FlopcastError(f"{p}: is kept by the study or run in {p.parent}; write the {o.what} elsewhere")
    if not force:
        raise FlopcastError(f"{p}: exists; pass --force to replace it")
