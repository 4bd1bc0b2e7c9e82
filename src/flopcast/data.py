"""Time-series datasets: HDF5 and CSV I/O, validation, seeded splits. No torch.

HDF5 format (the reference study's): ``/trajectories`` float (N, T, V), ``/time`` (T,).
Series of unequal length are stored NaN-padded with an extra ``/lengths`` (N,) dataset.
Optional attribute ``variables`` names the V columns.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ID_COLUMNS, TIME_COLUMNS, DataSpec, SplitConfig
from .errors import DataError

DEFAULT_VARIABLES = ("prey", "predator")


@dataclass
class Dataset:
    """A collection of multivariate series, each (T_i, V)."""

    series: list[np.ndarray]
    time: np.ndarray | None = None
    variables: tuple[str, ...] = ()
    source: str = ""
    ids: tuple[str, ...] = ()          # series ids from a CSV id column
    id_column: str | None = None
    time_column: str | None = None

    def __post_init__(self) -> None:
        self.series = [np.asarray(s, dtype=np.float64) for s in self.series]
        if not self.series:
            raise DataError(f"{self._where()}no series")
        V = self.series[0].shape[1] if self.series[0].ndim == 2 else -1
        for i, s in enumerate(self.series):
            validate_series(s, name=f"{self._where()}series {i}", n_vars=V)
        if not self.variables:
            self.variables = DEFAULT_VARIABLES if V == 2 else tuple(f"x{j}" for j in range(V))
        if len(self.variables) != V:
            raise DataError(f"{self._where()}{len(self.variables)} variable names for {V} variables")
        if self.time is not None:
            self.time = np.asarray(self.time, dtype=np.float64)
            if self.time.ndim != 1 or len(self.time) < max(len(s) for s in self.series):
                longest = max(len(s) for s in self.series)
                raise DataError(f"{self._where()}time has shape {self.time.shape}, need ({longest},)")
            if not np.all(np.isfinite(self.time)):
                raise DataError(f"{self._where()}time contains NaN or infinite values")

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    @property
    def n_series(self) -> int:
        return len(self.series)

    @property
    def n_vars(self) -> int:
        return self.series[0].shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.series])

    @property
    def rectangular(self) -> bool:
        return len(set(self.lengths.tolist())) == 1

    def array(self) -> np.ndarray:
        """(N, T, V) array; raises for ragged datasets."""
        if not self.rectangular:
            raise DataError(f"{self._where()}series have different lengths "
                            f"({self.lengths.min()}..{self.lengths.max()})")
        return np.stack(self.series)

    def subset(self, idx: np.ndarray | list[int]) -> "Dataset":
        ids = tuple(self.ids[i] for i in idx) if self.ids else ()
        return Dataset([self.series[i] for i in idx], self.time, self.variables, self.source, ids, self.id_column,
                       self.time_column)

    def summary(self) -> dict:
        allv = np.concatenate(self.series)
        return {
            "source": self.source,
            **({"id_column": self.id_column} if self.id_column else {}),
            **({"time_column": self.time_column} if self.time_column else {}),
            "n_series": self.n_series,
            "length_min": int(self.lengths.min()),
            "length_max": int(self.lengths.max()),
            "variables": list(self.variables),
            "min": allv.min(0).round(6).tolist(),
            "mean": allv.mean(0).round(6).tolist(),
            "max": allv.max(0).round(6).tolist(),
            "p99.7": float(np.percentile(allv, 99.7)),
        }


def validate_series(s: np.ndarray, name: str = "series", n_vars: int | None = None) -> None:
    """Raise :class:`DataError` (one line) unless ``s`` is a finite, non-negative (T, V) array."""
    if s.ndim != 2:
        raise DataError(f"{name}: expected a (T, V) array, got rank {s.ndim} with shape {s.shape}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise DataError(f"{name}: empty (shape {s.shape})")
    if n_vars is not None and s.shape[1] != n_vars:
        raise DataError(f"{name}: has {s.shape[1]} variables, expected {n_vars}")
    bad = ~np.isfinite(s)
    if bad.any():
        t, v = np.argwhere(bad)[0]
        raise DataError(f"{name}: {int(bad.sum())} NaN/infinite value(s), first at step {t}, variable {v}")
    if s.min() < 0:
        t, v = np.argwhere(s < 0)[0]
        raise DataError(f"{name}: {int((s < 0).sum())} negative value(s), first {s[t, v]:.6g} at step {t}, "
                        f"variable {v}")


# ----------------------------------------------------------------------------- HDF5

def load_h5(path: str | Path) -> Dataset:
    import h5py

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
        arr = np.asarray(traj[()], dtype=np.float64)
        time = np.asarray(f["time"][()], dtype=np.float64) if "time" in f else None
        lengths = np.asarray(f["lengths"][()], dtype=np.int64) if "lengths" in f else None
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


def save_h5(ds: Dataset, path: str | Path, attrs: dict | None = None) -> Path:
    import h5py

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    T = int(ds.lengths.max())
    arr = np.full((ds.n_series, T, ds.n_vars), np.nan)
    for i, s in enumerate(ds.series):
        arr[i, : len(s)] = s
    tmp = p.with_name(p.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("trajectories", data=arr.astype(np.float32 if _fits_f32(ds) else np.float64))
        f.create_dataset("time", data=ds.time if ds.time is not None else np.arange(T, dtype=np.float64))
        if not ds.rectangular:
            f.create_dataset("lengths", data=ds.lengths)
        f.attrs["variables"] = list(ds.variables)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    tmp.replace(p)  # atomic: never leave a half-written file
    return p


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
        from datetime import datetime, timezone

        t = datetime.fromisoformat(text.strip())
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _read_csv_rows(p: Path) -> tuple[list[str], list[list[str]]]:
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{p}: empty CSV")
    if len(rows) == 1:
        raise DataError(f"{p}: CSV has a header but no data rows")
    return [h.strip() for h in rows[0]], rows[1:]


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
    time = np.array(max(times.values(), key=len)) if tc else None
    return Dataset([np.array(v) for v in groups.values()], time, tuple(value_cols), source=str(p),
                   ids=tuple(groups) if idc else (), id_column=idc, time_column=tc)


def load(path: str | Path | DataSpec, id_column: str | None = None, time_column: str | None = None) -> Dataset:
    """Load ``.h5``/``.hdf5`` or ``.csv`` by extension (a :class:`DataSpec` carries the CSV columns)."""
    if isinstance(path, DataSpec):
        path, id_column, time_column = path.path, path.id_column, path.time_column
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        return load_h5(p)
    if suffix in (".csv", ".txt"):
        return load_csv(p, id_column, time_column)
    raise DataError(f"{p}: unknown data format {suffix!r} (use .h5 or .csv)")


# ----------------------------------------------------------------------------- splits

@dataclass
class Split:
    """Indices of series in each split (by system: a series is never divided)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int = 0

    def indices(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r} (train, val or test)")
        return getattr(self, name)

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed, "train": self.train.tolist(), "val": self.val.tolist(),
                           "test": self.test.tolist()})

    @classmethod
    def from_json(cls, text: str) -> "Split":
        d = json.loads(text)
        return cls(np.array(d["train"], dtype=int), np.array(d["val"], dtype=int), np.array(d["test"], dtype=int),
                   d.get("seed", 0))


def split(n: int, config: SplitConfig | None = None) -> Split:
    """Seeded permutation of ``n`` systems into train/val/test (sizes by rounding, train gets the rest)."""
    c = config or SplitConfig()
    if n < 1:
        raise DataError("cannot split an empty dataset")
    perm = np.random.default_rng(c.seed).permutation(n)
    n_val = int(round(n * c.val))
    n_test = int(round(n * c.test))
    n_train = n - n_val - n_test
    if n_train < 0:
        raise DataError(f"{n} series are too few for split {c}")
    return Split(np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:]),
                 c.seed)
