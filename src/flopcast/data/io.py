"""Reading and writing datasets: HDF5 (the reference study's format) and CSV, chosen by extension. No torch.

HDF5: ``/trajectories`` float (N, T, V) and ``/time`` (T,); series of unequal length are stored NaN-padded with an
extra ``/lengths`` (N,) dataset; the attribute ``variables`` names the V columns.

CSV: one column per variable; a column named ``id``/``series``/``item_id`` splits the rows into series and one
named ``time``/``t``/``timestamp``/``date`` (numbers or ISO dates) gives their times (:class:`~flopcast.config.DataSpec`
names them explicitly).
"""

from __future__ import annotations

import csv
import io
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..config import ID_COLUMNS, TIME_COLUMNS, DataSpec
from ..errors import DataError
from ..results import write_atomic
from .dataset import Dataset


def load_h5(path: str | Path) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"{p}: not a readable HDF5 file ({str(e).splitlines()[0]})") from None
    with f:
        if "trajectories" not in f:
            raise DataError(f"{p}: missing dataset /trajectories (found: {', '.join(f.keys()) or 'nothing'})")
        traj = f["trajectories"]
        if not hasattr(traj, "shape") or traj.ndim != 3:
            raise DataError(f"{p}: /trajectories must be (N, T, V), got shape {getattr(traj, 'shape', '?')}")
        arr = _numbers(p, "trajectories", traj, np.float64)
        time = _numbers(p, "time", f["time"], np.float64) if "time" in f else None
        lengths = _numbers(p, "lengths", f["lengths"], np.int64) if "lengths" in f else None
        variables = tuple(str(v) for v in f.attrs.get("variables", ())) or ()
    if 0 in arr.shape:
        raise DataError(f"{p}: /trajectories is empty (shape {arr.shape})")
    if lengths is not None:
        if lengths.shape != (arr.shape[0],) or lengths.min() < 1 or lengths.max() > arr.shape[1]:
            raise DataError(f"{p}: /lengths must be (N,) with values in [1, {arr.shape[1]}]")
        series = [arr[i, : lengths[i]] for i in range(arr.shape[0])]
    else:
        series = list(arr)
    if time is not None and (time.ndim != 1 or len(time) != arr.shape[1]):
        raise DataError(f"{p}: /time must be ({arr.shape[1]},) to match /trajectories, got {time.shape}")
    return Dataset(series, time, variables, source=str(p))


def _numbers(p: Path, name: str, node: Any, dtype: Any) -> np.ndarray:
    """An HDF5 dataset as numbers; one of strings or other objects is one line naming it."""
    kind = getattr(getattr(node, "dtype", None), "kind", "")
    if kind not in ("f", "i", "u", "b"):
        raise DataError(f"{p}: /{name} holds {getattr(node, 'dtype', 'a group')}, not numbers")
    return np.asarray(node[()], dtype=dtype)


def save_h5(ds: Dataset, path: str | Path, attrs: dict | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    T = int(ds.lengths.max())
    arr = np.full((ds.n_series, T, ds.n_vars), np.nan)
    for i, s in enumerate(ds.series):
        arr[i, : len(s)] = s

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("trajectories", data=arr.astype(np.float32 if _fits_f32(ds) else np.float64))
            f.create_dataset("time", data=ds.time if ds.time is not None else np.arange(T, dtype=np.float64))
            if not ds.rectangular:
                f.create_dataset("lengths", data=ds.lengths)
            f.attrs["variables"] = list(ds.variables)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
    return write_atomic(p, write)  # never a half-written file


def _fits_f32(ds: Dataset) -> bool:
    return all(np.array_equal(s.astype(np.float32).astype(np.float64), s) for s in ds.series)


# ----------------------------------------------------------------------------- CSV

def _pick_column(header: list[str], name: str | None, known: tuple[str, ...], p: Path) -> str | None:
    """The column asked for (``""``: none), else the first whose name is a known one (any case)."""
    if name == "":
        return None
    if name is not None:
        if name not in header:
            raise DataError(f"{p}: column {name!r} not in header {header}")
        return name
    return next((h for h in header if h.lower() in known), None)


def _time_value(text: str) -> float:
    """A number, or an ISO date/time as seconds since the epoch."""
    try:
        return float(text)
    except ValueError:
        t = datetime.fromisoformat(text.strip())
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _csv_text(p: Path) -> str:
    """The file's text: UTF-8 (a byte-order mark is dropped), else Latin-1 with a warning; binary is refused."""
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise DataError(f"{p}: not a text file (it holds NUL bytes); a CSV is text, one row per line")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        warnings.warn(f"{p}: not UTF-8 text; read as Latin-1", stacklevel=4)
        return raw.decode("latin-1")


def _read_csv_rows(p: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows (blank lines skipped). A first row of numbers is data: its columns are named
    x0, x1, ... (with a warning); two columns of one name are refused."""
    try:
        rows = [r for r in csv.reader(io.StringIO(_csv_text(p), newline="")) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f"{p}: not a readable CSV ({e})") from None
    if not rows:
        raise DataError(f"{p}: empty CSV")
    header = [h.strip() for h in rows[0]]
    if all(_is_number(h) for h in header):
        header = [f"x{j}" for j in range(len(header))]
        warnings.warn(f"{p}: no header line (its first row is numbers); columns named {', '.join(header)}",
                      stacklevel=3)
        return header, rows
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"{p}: column name(s) {', '.join(map(repr, twice))} appear more than once in the header")
    if len(rows) == 1:
        raise DataError(f"{p}: CSV has a header but no data rows")
    return header, rows[1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_csv(path: str | Path, id_column: str | None = None, time_column: str | None = None,
             columns: list[str] | None = None) -> Dataset:
    """One column per variable. An id column splits rows into series (row order kept) and a time column
    gives their times; ``None`` recognises a column named id/series/item_id or time/t/timestamp/date,
    ``""`` means there is none."""
    p = Path(path)
    header, body = _read_csv_rows(p)
    idc = _pick_column(header, id_column, ID_COLUMNS, p)
    tc = _pick_column(header, time_column, TIME_COLUMNS, p)
    value_cols = columns or [h for h in header if h not in (idc, tc)]
    missing = [c for c in value_cols if c not in header]
    if missing or not value_cols:
        raise DataError(f"{p}: value column(s) {missing or value_cols} not in header {header}")
    ci = [header.index(c) for c in value_cols]
    groups: dict[str, list[list[float]]] = {}
    times: dict[str, list[float]] = {}
    for ln, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{p}:{ln}: {len(r)} fields, header has {len(header)}")
        key = r[header.index(idc)].strip() if idc else ""
        try:
            groups.setdefault(key, []).append([float(r[i]) for i in ci])
        except ValueError:
            raise DataError(f"{p}:{ln}: non-numeric value in {[r[i] for i in ci]}") from None
        if tc:
            try:
                times.setdefault(key, []).append(_time_value(r[header.index(tc)]))
            except ValueError:
                raise DataError(f"{p}:{ln}: time {r[header.index(tc)]!r} is neither a number nor an ISO date") from None
    series = {k: np.array(v) for k, v in groups.items()}
    if tc:
        for key in series:
            series[key], times[key] = _in_time_order(p, key if idc else None, series[key], times[key])
    time = np.array(max(times.values(), key=len)) if tc else None
    return Dataset(list(series.values()), time, tuple(value_cols), source=str(p),
                   ids=tuple(groups) if idc else (), id_column=idc, time_column=tc)


def _in_time_order(p: Path, key: str | None, values: np.ndarray, times: list[float]) -> tuple[np.ndarray, list[float]]:
    """A series' rows sorted by time (ties keep file order); a time that appears twice is refused."""
    t = np.asarray(times)
    order = np.argsort(t, kind="stable")
    t = t[order]
    if len(t) > 1 and np.any(np.diff(t) == 0):
        where = f"series {key!r}" if key is not None else "the series"
        raise DataError(f"{p}: {where} has time {t[np.argmax(np.diff(t) == 0)]:g} twice; one row per time step")
    return values[order], t.tolist()


def load(path: str | Path | DataSpec, id_column: str | None = None, time_column: str | None = None) -> Dataset:
    """Load ``.h5``/``.hdf5`` or ``.csv`` by extension (a :class:`DataSpec` carries the CSV columns)."""
    if isinstance(path, DataSpec):
        return load(path.path, path.id_column, path.time_column)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        return load_h5(p)
    if suffix in (".csv", ".txt"):
        return load_csv(p, id_column, time_column)
    raise DataError(f"{p}: unknown data format {suffix!r} (use .h5 or .csv)")


