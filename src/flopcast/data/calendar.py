"""Time stamps: the frequency of a series, read from its timestamps, and the stamps of the steps after it. No torch.

Dates continue on the calendar, as pandas' offsets do: a monthly series ending 1960-12-01 continues 1961-01-01,
1961-02-01 (month starts), one ending 1960-12-31 continues 1961-01-31, 1961-02-28 (month ends); quarters, weeks,
business days and hours likewise. The frequency is :func:`pandas.infer_freq`'s reading of the timestamps; where
it finds none (irregular stamps, or fewer than three), the last spacing is repeated. Numbers (a ``year`` column,
seconds) continue at their last spacing; series without stamps at step indices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def is_dates(ts: np.ndarray | None) -> bool:
    return ts is not None and np.issubdtype(np.asarray(ts).dtype, np.datetime64)


def infer_frequency(ts: np.ndarray | None) -> str | None:
    """The pandas frequency of dated timestamps (``"MS"``, ``"QS-OCT"``, ``"D"``, ...), or None."""
    if not is_dates(ts) or ts is None or len(ts) < 3:
        return None
    try:
        return pd.infer_freq(pd.DatetimeIndex(ts))
    except (TypeError, ValueError):
        return None


def future_timestamps(ts: np.ndarray | None, length: int, horizon: int) -> np.ndarray:
    """The next ``horizon`` timestamps after ``ts`` (see the module doc); step indices without any."""
    if ts is None or len(ts) == 0:
        return np.arange(length, length + horizon)
    freq = infer_frequency(ts)
    if freq is not None:
        return pd.date_range(pd.Timestamp(ts[-1]), periods=horizon + 1, freq=freq)[1:].to_numpy()
    if len(ts) < 2:
        return np.arange(length, length + horizon)
    step = ts[-1] - ts[-2]
    return np.array([ts[-1] + step * (k + 1) for k in range(horizon)])


def shown_stamp(t: object) -> object:
    """A timestamp for a table or CSV: dates as ISO text (the date alone at midnight), numbers as they are."""
    if isinstance(t, (np.datetime64, pd.Timestamp)):
        ts = pd.Timestamp(t)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    if isinstance(t, np.generic):
        return t.item()
    return t


SEASONS = (("Y", 1), ("A", 1), ("Q", 4), ("M", 12), ("W", 52), ("B", 5), ("D", 7), ("h", 24), ("H", 24))


def season_of(freq: str | None) -> int:
    """The seasonal period forecasting tools use for a pandas frequency (monthly 12, quarterly 4, weekly 52,
    daily 7, business days 5, hourly 24, n-minute data a day's steps); 1 when there is none or it is unknown."""
    if not freq:
        return 1
    offset = pd.tseries.frequencies.to_offset(freq)
    n, name = max(int(getattr(offset, "n", 1)), 1), offset.name
    if name in ("min", "T"):
        return max(1, 1440 // n)
    for prefix, season in SEASONS:
        if name.startswith(prefix):
            return max(1, season // n) if prefix in ("h", "H") else season
    return 1
