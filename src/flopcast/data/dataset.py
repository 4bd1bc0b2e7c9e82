"""Time-series datasets (validated on construction) and their seeded train/validation/test splits. No torch.

A :class:`Dataset` is a list of multivariate series, each (T_i, V), with optional times and variable names; a
:class:`Split` divides its series (never a series itself) into train, validation and test.
"""

from __future__ import annotations

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
        return Dataset([self.series[i] for i in idx], self.time, self.variables, self.source, ids, self.id_column,
                       self.time_column, stamps)

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
