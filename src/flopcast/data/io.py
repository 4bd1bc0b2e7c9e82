"""Reading and writing datasets: HDF5 (the reference study's format) and CSV, chosen by extension. No torch.

HDF5: ``/trajectories`` float (N, T, V) and ``/time`` (T,); series of unequal length are stored NaN-padded with an
extra ``/lengths`` (N,) dataset; the attribute ``variables`` names the V columns.

CSV: read as a long table by the rules every table follows (:mod:`flopcast.data.frames`): an id column splits the
rows into series, a time column (numbers or dates) orders and stamps them, the other numeric columns are the
variables (``y`` alone in the ``unique_id, ds, y`` layout); missing values are reported or filled
(:class:`~flopcast.config.DataSpec` names the columns and the fill explicitly).
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ..config import DataSpec
from ..errors import DataError
from ..results import write_atomic
from .dataset import Dataset
from .frames import SeriesBatch, series_from
from .gaps import fill_gaps


def load_h5(path: str | Path, fill: str | None = None) -> Dataset:
    """The reference format (see the module doc); NaN inside a series is a missing value, filled by ``fill`` or
    refused (:mod:`flopcast.data.gaps`)."""
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
    names = variables or tuple(f"variable {j}" for j in range(arr.shape[2]))
    series = fill_gaps(series, list(range(len(series))), names, [range(len(s)) for s in series], fill, f"{p}: ")
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


def _read_csv_rows(p: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the data rows with their line numbers. A first row of numbers is data: its columns are named
    x0, x1, ... (with a warning); two columns of one name are refused. Blank lines at the end are dropped; inside
    a one-column file a blank line is an empty cell (a missing value), in a wider one it is skipped."""
    try:
        rows = list(csv.reader(io.StringIO(_csv_text(p), newline="")))
    except csv.Error as e:
        raise DataError(f"{p}: not a readable CSV ({e})") from None
    numbered = [(ln, r) for ln, r in enumerate(rows, start=1)]
    while numbered and not any(c.strip() for c in numbered[-1][1]):
        numbered.pop()
    while numbered and not any(c.strip() for c in numbered[0][1]):
        numbered.pop(0)
    if not numbered:
        raise DataError(f"{p}: empty CSV")
    header = [h.strip() for h in numbered[0][1]]
    body = [(ln, r if r or len(header) > 1 else [""]) for ln, r in numbered]
    body = [(ln, r) for ln, r in body if r]
    if all(_is_number(h) for h in header):
        header = [f"x{j}" for j in range(len(header))]
        warnings.warn(f"{p}: no header line (its first row is numbers); columns named {', '.join(header)}",
                      stacklevel=3)
        return header, body
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"{p}: column name(s) {', '.join(map(repr, twice))} appear more than once in the header")
    if len(body) == 1:
        raise DataError(f"{p}: CSV has a header but no data rows")
    return header, body[1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_csv_frame(path: str | Path) -> pd.DataFrame:
    """A CSV as a table of text, indexed by file line (for messages), under the rules of :func:`_read_csv_rows`."""
    p = Path(path)
    header, body = _read_csv_rows(p)
    for ln, r in body:
        if len(r) != len(header):
            raise DataError(f"{p}:{ln}: {len(r)} fields, header has {len(header)}")
    return pd.DataFrame([[c.strip() for c in r] for _, r in body], columns=header,
                        index=pd.Index([ln for ln, _ in body], name="line"), dtype=object)


def load_csv(path: str | Path, id_column: str | None = None, time_column: str | None = None,
             columns: list[str] | tuple[str, ...] | None = None, fill: str | None = None) -> Dataset:
    """A long CSV: an id column splits rows into series (row order kept), a time column sorts and stamps them,
    every other numeric column is a variable (``columns`` picks them; ``y`` alone in the ``unique_id, ds, y``
    layout). ``None`` recognises the columns by name (:data:`~flopcast.data.frames.ID_NAMES`,
    :data:`~flopcast.data.frames.TIME_NAMES`), ``""`` means there is none. Missing values are filled by
    ``fill`` or refused (:mod:`flopcast.data.gaps`)."""
    p = Path(path)
    batch = series_from(read_csv_frame(p), id_column, time_column, list(columns) if columns else None, fill,
                        where=f"{p}: ")
    return dataset_of(batch, str(p))


def dataset_of(batch: SeriesBatch, source: str = "") -> Dataset:
    """A :class:`Dataset` of the series read from a table: ids and stamps kept, times as numbers (dates as seconds
    since the epoch) from the longest series."""
    stamps = batch.timestamps if batch.timestamp_found else None
    time = None
    if stamps is not None:
        longest = max(stamps, key=lambda t: 0 if t is None else len(t))
        time = _seconds(longest)
    return Dataset(batch.values, time, batch.variables, source=source,
                   ids=tuple(str(k) for k in batch.ids) if batch.id_found else (),
                   id_column=batch.id_column if batch.id_found else None,
                   time_column=batch.timestamp_column if batch.timestamp_found else None, stamps=stamps)


def _seconds(ts: Any) -> np.ndarray:
    a = np.asarray(ts)
    if np.issubdtype(a.dtype, np.datetime64):
        return a.astype("datetime64[ns]").astype(np.int64) / 1e9
    return a.astype(np.float64)


def load(path: str | Path | DataSpec, id_column: str | None = None, time_column: str | None = None) -> Dataset:
    """Load ``.h5``/``.hdf5`` or ``.csv`` by extension (a :class:`DataSpec` carries the CSV columns and the fill)."""
    columns: tuple[str, ...] | None = None
    fill: str | None = None
    if isinstance(path, DataSpec):
        id_column, time_column, columns, fill = path.id_column, path.time_column, path.value_columns, path.fill
        path = path.path
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        return load_h5(p, fill)
    if suffix in (".csv", ".txt"):
        return load_csv(p, id_column, time_column, columns, fill)
    raise DataError(f"{p}: unknown data format {suffix!r} (use .h5 or .csv)")


