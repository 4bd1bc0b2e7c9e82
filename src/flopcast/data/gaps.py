"""Missing values: found and reported (series, variable, row), filled only when asked. No torch.

A missing value -- an empty CSV cell, a NaN in a DataFrame or array -- is never dropped: dropping it would shift
every later step by one and forecast from a series that never was. Without ``fill`` it stops the work before any
FLOP is spent, naming where the first one is and how many there are; with ``fill="linear"`` (straight lines
between the neighbours, the ends held) or ``fill="ffill"`` (the last value carried forward, a leading gap taken
from the first value) each series is filled on its own and a warning says how many values were made up.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..config import FILLS
from ..errors import DataError


def check_fill(fill: Any) -> None:
    """``fill`` is None or one of :data:`FILLS` (one line otherwise)."""
    if fill is not None and fill not in FILLS:
        raise DataError(f"fill must be one of {', '.join(FILLS)} (or none), got {fill!r}")


def fill_gaps(values: list[np.ndarray], ids: Sequence[Any], variables: Sequence[str], rows: Sequence[Sequence[Any]],
              fill: str | None, where: str = "") -> list[np.ndarray]:
    """The series with their missing values filled by ``fill``, or a :class:`DataError` naming the first one
    (``rows``: each series' row labels -- file lines or DataFrame index -- for the message)."""
    check_fill(fill)
    missing = [np.isnan(v) for v in values]
    total = int(sum(m.sum() for m in missing))
    if total == 0:
        return values
    if fill is None:
        i = next(k for k, m in enumerate(missing) if m.any())
        t, j = (int(x) for x in np.argwhere(missing[i])[0])
        raise DataError(f"{where}{total} missing value(s); the first in series {ids[i]!r}, variable "
                        f"{variables[j]!r}, row {rows[i][t]}; fill them with --fill linear|ffill (API fill=, plan "
                        "data.fill) or remove them")
    out = [_filled(v, fill, ids[i], where) if m.any() else v for i, (v, m) in enumerate(zip(values, missing))]
    warnings.warn(f"{where}{total} missing value(s) in {sum(bool(m.any()) for m in missing)} series filled "
                  f"({fill})", stacklevel=3)
    return out


def _filled(v: np.ndarray, fill: str, key: Any, where: str) -> np.ndarray:
    frame = pd.DataFrame(v)
    if frame.isna().all().any():
        raise DataError(f"{where}series {key!r} has a variable with no values at all; nothing to fill it from")
    if fill == "linear":
        frame = frame.interpolate(method="linear", limit_direction="both")
    else:
        frame = frame.ffill().bfill()
    return frame.to_numpy(dtype=np.float64)
