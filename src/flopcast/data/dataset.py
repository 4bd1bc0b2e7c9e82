"""Time-series datasets (validated on construction) and their seeded train/validation/test splits. No torch.

A :class:`Dataset` is a list of multivariate series, each (T_i, V), with optional times and variable names; a
:class:`Split` divides its series (never a series itself) into train, validation and test.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from ..config import SplitConfig
from ..errors import DataError

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
    stamps: list | None = None         # each series' own timestamps (numbers or datetime64), from a table
    origins: list[list[int]] | None = None  # per series, the steps forecasts are scored from (a time split's)

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
        stamps = [self.stamps[i] for i in idx] if self.stamps is not None else None
        origins = [self.origins[i] for i in idx] if self.origins is not None else None
        return Dataset([self.series[i] for i in idx], self.time, self.variables, self.source, ids, self.id_column,
                       self.time_column, stamps, origins)

    def cut(self, ends: list[int], origins: list[list[int]] | None = None) -> "Dataset":
        """Every series cut to its first ``ends[i]`` steps (stamps too), with ``origins`` to score from."""
        stamps = [st[:e] for st, e in zip(self.stamps, ends)] if self.stamps is not None else None
        return dataclasses.replace(self, series=[s[:e] for s, e in zip(self.series, ends)], stamps=stamps,
                                   origins=origins)

    def name_of(self, i: int) -> str:
        """Series ``i`` as messages name it: its id, else its index."""
        return repr(self.ids[i]) if self.ids else str(i)

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
    """Raise :class:`DataError` (one line) unless ``s`` is a finite (T, V) array (missing values are filled or
    refused where data are read, :mod:`flopcast.data.gaps`)."""
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


# ----------------------------------------------------------------------------- splits

@dataclass
class Split:
    """Indices of series in each split: by series (a series is never divided), or by time (every series in every
    part, cut at ``cuts``: per series, where training ends and where each tested horizon starts)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int = 0
    cuts: list[list[int]] | None = None

    def indices(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r} (train, val or test)")
        return getattr(self, name)

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed, "train": self.train.tolist(), "val": self.val.tolist(),
                           "test": self.test.tolist(), **({"by": "time", "cuts": self.cuts} if self.cuts else {})})

    @classmethod
    def from_json(cls, text: str) -> "Split":
        d = json.loads(text)
        return cls(np.array(d["train"], dtype=int), np.array(d["val"], dtype=int), np.array(d["test"], dtype=int),
                   d.get("seed", 0), d.get("cuts"))


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


MIN_TRAIN_STEPS = 2  # a time split leaves training at least this many steps of every series


def time_cuts(ds: Dataset, horizon: int, test_windows: int) -> list[list[int]]:
    """Per series ``[train_end, val_end=first test origin, ..., last test origin]``: the last ``test_windows``
    horizons are tested, the horizon before them validates; a series too short for that is refused by name."""
    need = (test_windows + 1) * horizon + MIN_TRAIN_STEPS
    cuts = []
    for i, s in enumerate(ds.series):
        T = len(s)
        if T < need:
            raise DataError(f"{ds._where()}series {ds.name_of(i)} has {T} steps; a time split with {test_windows} "
                            f"test window(s) of {horizon} steps needs {need} ({MIN_TRAIN_STEPS} to train on, "
                            f"{horizon} to validate): fewer test windows, a shorter horizon, or split by series")
        cuts.append([T - k * horizon for k in range(test_windows + 1, 0, -1)])
    return cuts


def split_dataset(ds: Dataset, config: SplitConfig, horizon: int) -> tuple[Split, dict[str, Dataset]]:
    """The train, val and test parts of ``ds`` under ``config`` (``horizon``: the steps a test window scores).
    By time, training gets each series up to its validation horizon, validation each series up to its first test
    origin (scored from the validation origin), test each whole series (scored from every test origin)."""
    if config.by == "series":
        sp = split(ds.n_series, config)
        empty = [name for name in ("train", "val", "test") if len(sp.indices(name)) == 0]
        if empty:
            raise DataError(f"{ds._where()}{ds.n_series} series are too few to split by series (the "
                            f"{' and '.join(empty)} part would be empty): split by time to hold out each series' "
                            "tail (--split-by time, [split] by = \"time\")")
        return sp, {name: ds.subset(sp.indices(name)) for name in ("train", "val", "test")}
    cuts = time_cuts(ds, horizon, config.test_windows)
    every = np.arange(ds.n_series)
    parts = {"train": ds.cut([c[0] for c in cuts]),
             "val": ds.cut([c[1] for c in cuts], [[c[0]] for c in cuts]),
             "test": ds.cut([len(s) for s in ds.series], [c[1:] for c in cuts])}
    return Split(every, every, every, config.seed, cuts), parts
